"""QLoRA on a scaled-down random Mixtral, on the lent GPU (same architecture, a few billion parameters).

    python bench/gpu_qlora.py --tokenizer DIR [--layers 8] [--hidden 2048] [--steps 20] [--out RESULT.json]
    python bench/gpu_qlora.py --tokenizer DIR --cpu-dry-run      # the same code path, tiny, on a CPU

1. Builds the model from MixtralConfig (random weights) and saves it in bf16.
2. Loads it in 4-bit NF4 (bitsandbytes, bf16 compute) as the recipe does and measures peak GPU
   memory right after loading, and which parameters were quantized: in transformers 5 the
   experts are fused 3-D parameters, and bitsandbytes quantizes nn.Linear layers only, so the
   experts may stay in bf16 (about 90 GB for the real 8x7B).
3. Trains through training.recipe.run (QLoRA, LoRA on attention, router loss) for --steps and
   reports training tokens per second and peak memory.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="a folder with an HF tokenizer (SmolLM2's)")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cpu-dry-run", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, MixtralConfig, MixtralForCausalLM

    from serving.chat_templates import TEMPLATE_DIR
    from training.recipe import TrainConfig, run

    if args.cpu_dry_run:
        args.layers, args.hidden, args.experts, args.steps = 2, 64, 4, 2
    cuda = torch.cuda.is_available() and not args.cpu_dry_run
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
    with torch.device("cuda" if cuda else "cpu"):
        model = MixtralForCausalLM(config).to(torch.bfloat16)
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    del model
    result: dict = {"parameters": parameters, "layers": args.layers, "hidden": args.hidden, "experts": args.experts}

    if cuda:
        from transformers import BitsAndBytesConfig

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        quantized = AutoModelForCausalLM.from_pretrained(
            work / "model",
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
            ),
            device_map={"": 0},
        )
        result["peak_gib_after_4bit_load"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["bf16_gib_if_unquantized"] = round(parameters * 2 / 2**30, 2)
        kinds: dict[str, int] = {}
        for name, parameter in quantized.named_parameters():
            kind = f"{'experts' if 'experts' in name else 'other'}:{type(parameter).__name__}:{parameter.dtype}"
            kinds[kind] = kinds.get(kind, 0) + parameter.numel()
        result["parameters_by_kind"] = kinds
        del quantized
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    rng = random.Random(0)
    rows = []
    for _ in range(64):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"What is {a} + {b}?"},
                    {
                        "role": "assistant",
                        "content": " ".join(f"Step {i}: add the digits." for i in range(8)) + f" {a + b}.",
                    },
                ]
            }
        )
    data = work / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    started = time.perf_counter()
    trained = run(
        TrainConfig(
            base_model=str(work / "model"),
            train_file=str(data),
            output_dir=str(work / "adapter"),
            chat_template=str(TEMPLATE_DIR / "chatml.jinja"),
            max_steps=args.steps,
            batch_size=8,
            quantize_4bit=cuda,
            gradient_checkpointing=cuda,
        )
    )
    seconds = time.perf_counter() - started
    result.update(
        qlora=cuda,
        steps=trained.steps,
        train_tokens=trained.train_tokens,
        seconds=round(seconds, 1),
        tokens_per_second=round(trained.train_tokens / trained.seconds, 1) if trained.seconds else None,
        train_loss=trained.train_loss,
    )
    if cuda:
        result["peak_gib_training"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
