"""The evaluation gate's numbers: held-out loss of the base model, the adapter in service and
the candidate (each loaded fresh, the way vLLM serves it), on the tutor's turns only; and
replies to held-out questions from the candidate and the current tutor, side by side."""

from __future__ import annotations

import json
from pathlib import Path


def heldout_losses(*, base_model: str, eval_file: str, adapters: dict[str, str | None], chat_template: str) -> dict:
    """{name: mean loss per trained token}; an adapter path of None means the base model."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from training.recipe import base_model_load

    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    template = Path(chat_template).read_text()
    rows = [json.loads(line) for line in Path(eval_file).read_text().splitlines() if line.strip()]
    encoded = []
    for row in rows:
        out = tokenizer.apply_chat_template(
            row["messages"],
            chat_template=template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        ids = torch.tensor([out["input_ids"]])
        labels = ids.clone()
        labels[0, torch.tensor(out["assistant_masks"]) == 0] = -100
        encoded.append((ids, labels))
    # On CUDA the base is loaded as training loaded it (4-bit, experts included), unless an adapter
    # adapts the fused experts themselves, which need them unquantized.
    expert_lora = any(
        json.loads((Path(path) / "adapter_config.json").read_text()).get("target_parameters")
        for path in adapters.values()
        if path
    )
    base = base_model_load(base_model, quantize=cuda, cuda=cuda, quantize_experts=not expert_lora).eval()
    device = next(base.parameters()).device
    losses: dict = {}
    for name, path in adapters.items():
        model = PeftModel.from_pretrained(base, path).eval() if path else base
        total = tokens = 0.0
        with torch.no_grad():
            for ids, labels in encoded:
                count = int((labels[0, 1:] != -100).sum())
                if not count:
                    continue
                loss = model(input_ids=ids.to(device), labels=labels.to(device)).loss
                total += float(loss) * count
                tokens += count
        losses[name] = round(total / tokens, 4) if tokens else None
        if path:
            base = model.unload()
    return losses


def sample_replies(*, eval_file: str, models: dict[str, str], limit: int = 5) -> list[dict]:
    """The held-out questions answered by each served model (vLLM), for a teacher's spot check."""
    from serving.client import ModelServerUnavailable, chat_complete

    rows = [json.loads(line) for line in Path(eval_file).read_text().splitlines() if line.strip()][:limit]
    samples = []
    for row in rows:
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        prompt, expected = messages[:-1], messages[-1]["content"]
        sample = {"question": prompt[-1]["content"], "expected": expected}
        for label, model in models.items():
            try:
                sample[label] = chat_complete(model=model, messages=prompt).content
            except ModelServerUnavailable as exc:
                sample[label] = f"(no reply: {exc})"
        samples.append(sample)
    return samples
