"""Peak resident memory of a training process on the demo model (SmolLM2-135M, 2 CPU cores).

    .venv/bin/python bench/memory.py [--steps 4] [--examples 180] [--write docs/benchmarks.md]

Each configuration trains in a process of its own on the same data (tutoring exchanges of about
165 tokens, one of them a 4,000-character pasted data table), and its peak comes from the
kernel's accounting of that process (wait4's ru_maxrss), as the training worker measures jobs:

1. plain TRL as its users run it (the baseline): `SFTTrainer` defaults, LoRA r16 on all linear
   layers, bf16 off (emulated on this CPU);
2. our recipe (`training.recipe.run`, the deployment's defaults) with glibc's malloc defaults;
3. our recipe in the environment the worker gives its training process
   (`training.jobs.child_environment`), i.e. what a job really uses.
Printed: peak GiB, the ratio to the baseline, and seconds per step.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import demo_model_env  # noqa: E402


def examples(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        value = rng.randint(2, 90) / 10
        question = f"How many centimetres are in {value} metres? " + "I am not sure how to start. " * rng.randint(1, 8)
        if index == count // 2:  # one student pastes their measurements
            trials = "\n".join(f"trial {i}: {i * 0.37:.2f} s, {i * 1.9 + 3:.1f} cm" for i in range(400))
            question = ("Here is my data, is it right?\n" + trials)[:4000]
        answer = f"Units first: 1 m = 100 cm, so {value} m = {value * 100:g} cm. " + "Check the units. " * rng.randint(
            2, 12
        )
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "You are a patient science tutor. Reply in English."},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return rows


def child(kind: str, data: Path, steps: int, out: Path) -> None:
    """Runs in the measured process, on the demo model main() prepared."""
    started = time.perf_counter()
    model = Path(os.environ["MODEL_DEMO_DIR"])
    if kind == "trl":
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        rows = [json.loads(line) for line in data.read_text().splitlines()]
        trainer = SFTTrainer(
            model=str(model),
            args=SFTConfig(
                output_dir=str(out), max_steps=steps, use_cpu=True, bf16=False, report_to=[], save_strategy="no"
            ),
            train_dataset=Dataset.from_list(rows),
            processing_class=AutoTokenizer.from_pretrained(model),
            peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
        )
        begun = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - begun
    else:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        os.environ.setdefault("DJANGO_DEBUG", "1")
        import django

        django.setup()
        from training.config import train_config
        from training.recipe import run

        config = train_config(
            base_model=str(model), train_file=str(data), output_dir=str(out), overrides={"max_steps": steps}
        )
        seconds = run(config).train_seconds
    print(json.dumps({"seconds_per_step": seconds / steps, "wall": time.perf_counter() - started}))


def measure(kind: str, env: dict, data: Path, steps: int, work: Path) -> dict:
    argv = [sys.executable, __file__, "--child", kind, "--data", str(data), "--steps", str(steps), "--out", str(work)]
    process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    output = process.stdout.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{kind} failed: {output[-2000:]}")
    return {"peak": usage.ru_maxrss * 1024, **json.loads(output.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--examples", type=int, default=180)
    parser.add_argument("--write", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.steps, args.out)
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ.setdefault("TUTOR_VAR_DIR", tempfile.mkdtemp(prefix="bench-memory-var-"))
    os.environ.pop("DATABASE_URL", None)
    os.environ.update(demo_model_env())
    import django

    django.setup()
    from django.conf import settings

    from serving.demo_model import demo_model_prepare
    from training.jobs import child_environment

    demo_model_prepare(target=settings.MODEL_DEMO_DIR)

    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    data = work / "train.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in examples(args.examples)) + "\n")
    plain = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    job_env = {**plain, **{key: value for key, value in child_environment().items() if key.startswith("MALLOC_")}}
    results = {
        "plain TRL SFTTrainer defaults (baseline)": measure("trl", plain, data, args.steps, work / "trl"),
        "our recipe, glibc malloc defaults": measure("ours", plain, data, args.steps, work / "ours-plain"),
        "our recipe as a job runs it (child_environment)": measure("ours", job_env, data, args.steps, work / "job"),
    }
    baseline = results["plain TRL SFTTrainer defaults (baseline)"]["peak"]
    table = ["| training process | peak resident memory | ratio | seconds per step |", "|---|---|---|---|"]
    for label, result in results.items():
        table.append(
            f"| {label} | {result['peak'] / 2**30:.2f} GiB | {result['peak'] / baseline:.3f} | "
            f"{result['seconds_per_step']:.1f} |"
        )
    print("\n".join(table))
    if args.write:
        with args.write.open("a", encoding="utf-8") as handle:
            handle.write(
                "\n".join(
                    [
                        "",
                        f"### Training memory ({date.today().isoformat()}, 2 CPU cores, SmolLM2-135M, LoRA r16 all linear)",
                        "",
                        f"Command: `.venv/bin/python bench/memory.py {' '.join(sys.argv[1:])}`",
                        "",
                        f"{args.examples} tutoring examples (one a 4,000-character data table), {args.steps} steps "
                        "each, every configuration in a process of its own (peak: wait4's ru_maxrss).",
                        "",
                        *table,
                        "",
                    ]
                )
            )


if __name__ == "__main__":
    main()
