"""QLoRA on a scaled-down random Mixtral (same architecture, a few billion parameters).

    python bench/gpu_qlora.py --tokenizer DIR [--layers 8] [--hidden 2048] [--steps 20] [--out RESULT.json]
    python bench/gpu_qlora.py --tokenizer DIR --layers 4 --hidden 1024 --measure-only   # weights only, CPU too

1. Builds the model from MixtralConfig (random weights) and saves it in bf16.
2. Loads it in 4-bit NF4 (bitsandbytes, bf16 compute) the stock way and measures the weights by
   kind (and, on a GPU, peak memory right after loading). In transformers 5 the experts are fused
   3-D parameters and bitsandbytes quantizes nn.Linear layers only, so stock loading leaves the
   experts in bf16. Then `training.moe_4bit.experts_quantize` makes them 4-bit, and the weights
   are measured again. Both also get the figures scaled to Mixtral 8x7B's shapes.
3. On a GPU, trains through training.recipe.run (QLoRA, LoRA on attention, router loss) for
   --steps, with the experts quantized and (as the baseline, same run) without, and reports
   training tokens per second (over the trainer's own train_runtime) and peak memory over the
   whole run, loading included, for each.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# Mixtral 8x7B's shapes, for scaling the measured bytes per parameter up to the production model.
MIXTRAL_8X7B = {"hidden": 4096, "intermediate": 14336, "layers": 32, "experts": 8, "vocab": 32000, "kv_heads": 8}


def mixtral_8x7b_parameters() -> dict[str, int]:
    h, i, n, e = (MIXTRAL_8X7B[k] for k in ("hidden", "intermediate", "layers", "experts"))
    kv = MIXTRAL_8X7B["kv_heads"] * 128
    return {
        "experts": n * e * 3 * h * i,
        "attention": n * (2 * h * h + 2 * h * kv),
        "other": n * (e * h + 2 * h) + 2 * MIXTRAL_8X7B["vocab"] * h + h,  # router, norms, embeddings, head
    }


def weights_by_kind(model) -> dict[str, dict[str, float]]:
    """Parameters and bytes held, by kind (experts / attention / other) and storage type."""
    kinds: dict[str, dict[str, float]] = {}
    for name, parameter in model.named_parameters():
        entry = kinds.setdefault(_kind(name), {"bytes": 0, "stored_as": ""})
        entry["bytes"] += parameter.numel() * parameter.element_size()
        state = getattr(parameter, "quant_state", None)
        if state is not None:  # the block scales, themselves quantized with double quantization
            entry["bytes"] += state.absmax.numel() * state.absmax.element_size()
            if state.state2 is not None:
                entry["bytes"] += state.state2.absmax.numel() * state.state2.absmax.element_size()
        stored = f"{type(parameter).__name__}:{str(parameter.dtype).removeprefix('torch.')}"
        if stored not in entry["stored_as"]:
            entry["stored_as"] = ",".join(filter(None, [entry["stored_as"], stored]))
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="a folder with an HF tokenizer (SmolLM2's)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--measure-only", action="store_true", help="measure the 4-bit weights, do not train")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, MixtralConfig, MixtralForCausalLM

    from serving.chat_templates import TEMPLATE_DIR
    from training.jsonl import jsonl_write
    from training.moe_4bit import experts_quantize
    from training.recipe import TrainConfig, run

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    work = Path(tempfile.mkdtemp(prefix="gpu-qlora-"))
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    config = MixtralConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=int(args.hidden * 3.5),
        num_hidden_layers=args.layers,
        num_attention_heads=max(4, args.hidden // 128),
        num_key_value_heads=max(2, args.hidden // 256),
        num_local_experts=args.experts,
        num_experts_per_tok=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = MixtralForCausalLM(config).to(torch.bfloat16)
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    del model
    result: dict = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "parameters": parameters,
        "layers": args.layers,
        "hidden": args.hidden,
        "experts": args.experts,
    }

    # -- the weights in 4-bit: stock bitsandbytes loading, then with the experts quantized ------------
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    quantized = AutoModelForCausalLM.from_pretrained(
        work / "model",
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        ),
        device_map={"": 0 if cuda else "cpu"},
    )
    result["load_seconds"] = round(time.perf_counter() - started, 1)
    stock = weights_by_kind(quantized)
    if cuda:
        result["stock_4bit_peak_gib_after_load"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    started = time.perf_counter()
    result["experts_modules_quantized"] = experts_quantize(quantized)
    result["experts_quantize_seconds"] = round(time.perf_counter() - started, 1)
    full = weights_by_kind(quantized)
    if cuda:
        result["experts_4bit_gib_allocated"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    del quantized

    counts = _parameter_counts(config)
    production = mixtral_8x7b_parameters()
    for label, kinds in (("stock_4bit", stock), ("experts_4bit", full)):
        result[f"{label}_weights"] = {
            kind: {
                "stored_as": entry["stored_as"],
                "gib": round(entry["bytes"] / 2**30, 3),
                "bytes_per_parameter": round(entry["bytes"] / counts[kind], 3),
            }
            for kind, entry in kinds.items()
        }
        result[f"{label}_gib_scaled_to_mixtral_8x7b"] = round(
            sum(production[kind] * result[f"{label}_weights"][kind]["bytes_per_parameter"] for kind in production)
            / 2**30,
            1,
        )
    for scope, key in (("this_model", "weights"), ("mixtral_8x7b", "gib_scaled_to_mixtral_8x7b")):
        if key == "weights":
            stock_gib = sum(entry["gib"] for entry in result["stock_4bit_weights"].values())
            full_gib = sum(entry["gib"] for entry in result["experts_4bit_weights"].values())
        else:
            stock_gib, full_gib = result[f"stock_4bit_{key}"], result[f"experts_4bit_{key}"]
        result[f"weights_ratio_experts_4bit_vs_stock_{scope}"] = round(full_gib / stock_gib, 3)
    if args.measure_only or not cuda:
        _report(result, args.out)
        return

    # -- QLoRA through the recipe: experts in 4-bit, and (baseline, same run) in bf16 --------------------
    data = work / "train.jsonl"
    jsonl_write(data, _arithmetic_rows(64))
    for label, quantize_experts in (("experts_4bit", True), ("stock_4bit", False)):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        logged: list[dict] = []
        try:
            trained = run(
                TrainConfig(
                    base_model=str(work / "model"),
                    train_file=str(data),
                    output_dir=str(work / f"adapter-{label}"),
                    chat_template=str(TEMPLATE_DIR / "chatml.jinja"),
                    max_steps=args.steps,
                    tokens_per_step=2048,
                    quantize_experts=quantize_experts,
                ),
                on_log=logged.append,
            )
        except torch.cuda.OutOfMemoryError as exc:
            result[f"{label}_training"] = {"error": f"out of memory: {str(exc)[:200]}"}
            continue
        # The trainer's own train_runtime: the training loop alone, not loading or quantizing.
        runtime = next((float(line["train_runtime"]) for line in logged if "train_runtime" in line), None)
        result[f"{label}_training"] = {
            "steps": trained.steps,
            "train_tokens": trained.train_tokens,
            "train_runtime_seconds": runtime,
            "whole_run_seconds": trained.seconds,
            "tokens_per_second": round(trained.train_tokens / runtime, 1) if runtime else None,
            "train_loss": trained.train_loss,
            "peak_gib_whole_run": round(torch.cuda.max_memory_allocated() / 2**30, 2),  # loading included
        }
    _report(result, args.out)


def _kind(name: str) -> str:
    return "experts" if ".experts." in name else "attention" if ".self_attn." in name else "other"


def _parameter_counts(config) -> dict[str, int]:
    import torch
    from transformers import MixtralForCausalLM

    with torch.device("meta"):
        model = MixtralForCausalLM(config)
    counts = {"experts": 0, "attention": 0, "other": 0}
    for name, parameter in model.named_parameters():
        counts[_kind(name)] += parameter.numel()
    return counts


def _arithmetic_rows(count: int) -> list[dict]:
    rng = random.Random(0)
    rows = []
    for _ in range(count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        steps = " ".join(f"Step {i}: add the digits." for i in range(8))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"What is {a} + {b}?"},
                    {"role": "assistant", "content": f"{steps} {a + b}."},
                ]
            }
        )
    return rows


def _report(result: dict, out: Path | None) -> None:
    print(json.dumps(result, indent=2))
    if out:
        out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
