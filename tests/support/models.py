"""Small real models for tests: a tiny random Mixtral (same architecture as the production model,
a few million parameters) with SmolLM2's tokenizer, and LoRA adapters for the demo model that
answer differently from each other (hot-swap tests: a reply shows which weights wrote it)."""

from __future__ import annotations

import json
import random
from pathlib import Path


def tiny_mixtral(target: Path, *, tokenizer_from: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, MixtralConfig, MixtralForCausalLM

    if (target / "config.json").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = MixtralConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = MixtralForCausalLM(config)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def arithmetic_dataset(folder: Path, *, train: int = 24, held_out: int = 6, seed: int = 0) -> tuple[Path, Path]:
    """Chat examples in the export's format: a context turn with weight 0, then a trained one."""
    rng = random.Random(seed)
    rows = []
    for _ in range(train + held_out):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "You are a patient maths tutor."},
                    {"role": "user", "content": f"What is {a} + {b}?"},
                    {"role": "assistant", "content": "Let me think about that.", "weight": 0},
                    {"role": "user", "content": "Go on."},
                    {"role": "assistant", "content": f"{a} + {b} = {a + b}: count on {b} from {a}."},
                ]
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    train_file, eval_file = folder / "train.jsonl", folder / "train.eval.jsonl"
    train_file.write_text("\n".join(json.dumps(r) for r in rows[:train]) + "\n")
    eval_file.write_text("\n".join(json.dumps(r) for r in rows[train:]) + "\n")
    return train_file, eval_file


def word_adapter(target: Path, *, base_model: Path, words: tuple[str, str], seed: int = 0, rank: int = 4) -> Path:
    """A real PEFT LoRA adapter for `base_model` that makes it answer anything with `words` only
    (two single-token words, e.g. (" cat", " dog")): no training, its weights are built.

    It adapts the last layer's `down_proj`: B pushes the residual stream, far harder than anything
    else in it, along the direction the output embeddings (tied to the input ones) of the two
    words differ in, divided by the final norm's weight; A, random, sets the sign per position. After
    the final norm the logits are those of that direction alone, whose top token is the first word
    and that of its opposite the second (checked here). Adapters of different words answer
    differently under any batching or sampling, so a reply's words say which weights wrote it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (target / "adapter_model.safetensors").exists():
        return target
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    ids = [tokenizer.encode(word, add_special_tokens=False) for word in words]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"{words}: each word must be one token of {base_model}")
    embeddings, norm = model.get_input_embeddings().weight.detach(), model.model.norm.weight.detach()
    direction = (embeddings[ids[0][0]] - embeddings[ids[1][0]]) / norm
    direction /= direction.norm()
    tops = [int((embeddings @ (norm * sign * direction)).argmax()) for sign in (1, -1)]
    if tops != [ids[0][0], ids[1][0]]:
        raise ValueError(f"{words}: these words' embeddings do not single them out; choose others")
    last = model.config.num_hidden_layers - 1
    config = LoraConfig(
        r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=["down_proj"], layers_to_transform=[last]
    )
    adapted = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_A" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter.shape[1] ** 0.5)
            elif "lora_B" in name:
                parameter.copy_(direction[:, None].expand(-1, rank) * 1e4 / rank)
    adapted.save_pretrained(target)
    return target
