"""Small real models for training tests: a tiny random Mixtral (same architecture as the
production model, a few million parameters) with SmolLM2's tokenizer."""

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
