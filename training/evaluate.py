"""The evaluation gate's numbers: held-out loss of the base model, the adapter in service and
the candidate (each loaded fresh, the way vLLM serves it), on the tutor's turns only; and the
held-out questions answered through vLLM by the candidate and by what serves the course now,
each reply scored against the teacher's with chrF (sacrebleu), failed and empty replies counted."""

from __future__ import annotations

import json
from pathlib import Path

from serving.client import ModelServerUnavailable, chat_complete
from training.jsonl import jsonl_read


def heldout_losses(*, base_model: str, eval_file: str, adapters: dict[str, str | None], chat_template: str) -> dict:
    """{name: mean loss per trained token}; an adapter path of None means the base model."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from training.recipe import base_model_load

    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    template = Path(chat_template).read_text()
    encoded = []
    for row in jsonl_read(eval_file):
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


def gate_questions(*, eval_file: str, limit: int) -> list[dict]:
    """The held-out questions as the served tutor would have seen them: for each reply a teacher
    approved (or corrected) in a held-out conversation, that conversation's own system prompt and
    the turns before it; and the teacher's reply, which is what the tutor should have said."""
    questions: list[dict] = []
    for row in jsonl_read(eval_file):
        messages = row["messages"]
        for index, turn in enumerate(messages):
            if turn["role"] != "assistant" or turn.get("weight", 1) == 0 or index == 0:
                continue  # context turns (weight 0) are what the tutor said, not what it should say
            prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:index]]
            questions.append({"messages": prompt, "expected": turn["content"]})
            if len(questions) >= limit:
                return questions
    return questions


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ModelServerUnavailable):  # "The tutor took too long to answer. Your message is saved; ..."
        return str(exc).split(". ")[0].rstrip(".")
    return f"{exc.__class__.__name__}: {exc}"[:200]


def _served_reply(*, model: str, messages: list[dict], course_id: int | None) -> dict:
    """One reply through vLLM, as a student would get it (serving.client, its limits and timeouts,
    routed like the course's own replies)."""
    try:
        return {"reply": chat_complete(model=model, messages=messages, course_id=course_id).content, "error": None}
    except Exception as exc:  # a failure is a result here: counted, shown, and it blocks the gate
        return {"reply": "", "error": _short_error(exc)}


def replies_score(*, expected: list[str], replies: list[dict]) -> dict:
    """One model's replies scored against the teachers' with sacrebleu's chrF (0-100): corpus-level
    (the gate's number) and per reply (for the page). A failed reply scores as an empty one."""
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    hypotheses = [reply["reply"] if reply["error"] is None else "" for reply in replies]
    errors = [reply["error"] for reply in replies if reply["error"] is not None]
    return {
        "samples": len(replies),
        "failed": len(errors),
        "empty": sum(1 for reply in replies if reply["error"] is None and not reply["reply"].strip()),
        "errors": list(dict.fromkeys(errors))[:3],
        "chrf": round(chrf.corpus_score(hypotheses, [expected]).score, 2) if replies else None,
        "sentence_chrf": [
            round(chrf.sentence_score(h, [e]).score, 1) for h, e in zip(hypotheses, expected, strict=True)
        ],
        "metric": f"chrF {chrf.get_signature()}",
    }


def gate_replies(
    *, eval_file: str, models: dict[str, str], limit: int, course_id: int | None = None, concurrency: int = 4
) -> dict:
    """The held-out questions answered by each served model ({label: vLLM model name}), scored
    against the teachers' replies: {"replies": {label: score}, "samples": [side by side]}.
    Requests run a few at a time, as students' would (vLLM batches them)."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    questions = gate_questions(eval_file=eval_file, limit=limit)
    expected = [question["expected"] for question in questions]

    def ask(job: tuple[str, int]) -> dict:
        label, index = job
        try:
            return _served_reply(model=models[label], messages=questions[index]["messages"], course_id=course_id)
        finally:
            connections.close_all()  # a 404 reloads adapters from the database in this thread

    jobs = [(label, index) for label in models for index in range(len(questions))]
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(jobs)))) as pool:
        answers = dict(zip(jobs, pool.map(ask, jobs), strict=True))
    replies = {label: [answers[(label, index)] for index in range(len(questions))] for label in models}
    scores = {
        label: {"model": models[label], **replies_score(expected=expected, replies=replies[label])} for label in models
    }
    samples = []
    for index, question in enumerate(questions):
        sample = {
            "question": question["messages"][-1]["content"],
            "context_turns": sum(1 for m in question["messages"][:-1] if m["role"] != "system"),
            "expected": question["expected"],
        }
        for label in models:
            reply = replies[label][index]
            sample[label] = reply["reply"] if reply["error"] is None else f"(no reply: {reply['error']})"
            sample[f"{label}_chrf"] = scores[label]["sentence_chrf"][index]
        samples.append(sample)
    return {"replies": scores, "samples": samples}
