"""Dataset export: a course's approved, consented exchanges as chat JSONL for fine-tuning.

    python manage.py export_dataset --course ID --out FILE.jsonl [--eval-fraction 0.1]

One JSON object per line, in the format of mistral-finetune's instruct data (which TRL's
SFTTrainer reads as well)::

    {"messages": [{"role": "system", "content": "…"},
                  {"role": "user", "content": "…"},
                  {"role": "assistant", "content": "…", "weight": 0},   # context only: no loss
                  {"role": "user", "content": "…"},
                  {"role": "assistant", "content": "…"}]}               # trained

What goes in, and why:

* only conversations of a course whose teachers allowed training, from students who did not
  opt out; only the scrubbed copies of messages (never what the student typed);
* a reply a teacher approved is trained, in the teacher's corrected wording when there is
  one; every other reply (rejected, not reviewed) stays as context with `"weight": 0`;
  a conversation ends at its last approved reply; screened and failed exchanges are left out;
* exact and near duplicates are removed (MinHash LSH on word 5-grams);
* whole conversations go to the training or to the held-out file (FILE.eval.jsonl);
* every example is validated in the spirit of mistral-finetune's `validate_data` (roles
  alternate, the last is the assistant, nothing empty) and fitted to TRAINING_MAX_SEQ_TOKENS
  with the base model's own tokenizer and chat template: a longer example loses its earliest
  turns first, then the middle of its longest student message (marked "[…]"), and is dropped
  only when the trained reply alone does not fit; the report (FILE.report.json, and the
  export's row) says what was kept, shortened and dropped and why, token counts, and an
  estimate of the training time from the throughput measured on this machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import statistics
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Prefetch
from django.utils import timezone

from serving.chat_templates import chat_template_text
from serving.model_server import base_model_dir
from training.estimates import estimate_words, training_estimate
from training.models import DatasetExample, DatasetExport, sibling_paths
from tutor.errors import DomainError
from tutor.models import Conversation, Course, Membership, Message, MessageStatus, Person, ReviewDecision
from tutor.prompts import system_prompt_for
from tutor.selectors import tutor_settings_get


class TrainingNotAllowed(DomainError):
    code = "training_not_consented"
    status = 409
    title = "This course's conversations may not be used for training"


class EmptyDataset(DomainError):
    code = "dataset_empty"
    status = 409
    title = "Nothing to export"


@dataclass
class Candidate:
    conversation_id: int
    messages: list[dict]
    provenance: list[dict]
    tokens: int = 0
    split: str = DatasetExample.Split.TRAIN

    @property
    def corrected(self) -> int:
        return sum(1 for p in self.provenance if p["source"] == "teacher_corrected")

    def line(self) -> str:
        return json.dumps({"messages": self.messages}, ensure_ascii=False)


@dataclass
class ExportReport:
    conversations: int = 0
    skipped: Counter = field(default_factory=Counter)  # whole conversations left out, by reason
    dropped: Counter = field(default_factory=Counter)  # candidate examples dropped, by reason
    kept: dict = field(default_factory=dict)
    shortened: Counter = field(default_factory=Counter)  # examples kept after shortening, by how
    tokens: dict = field(default_factory=dict)
    estimate: dict = field(default_factory=dict)
    base_model: str = ""
    max_tokens: int = 0

    def as_dict(self) -> dict:
        return {
            "conversations": self.conversations,
            "skipped_conversations": dict(self.skipped),
            "kept": self.kept,
            "shortened": dict(self.shortened),
            "dropped": dict(self.dropped),
            "tokens": self.tokens,
            "estimate": self.estimate,
            "base_model": self.base_model,
            "max_tokens": self.max_tokens,
        }


# -- building examples ---------------------------------------------------------------------------


def _usable(message: Message) -> bool:
    return (
        not message.guardrail
        and message.status == MessageStatus.COMPLETE
        and message.content_scrubbed is not None
        and bool(message.content_scrubbed.strip())
    )


def conversation_example(*, conversation: Conversation, current_system_prompt: str) -> Candidate | str:
    """The conversation as one example, or the reason it yields none. Its system prompt is the one
    its last trained reply was generated under (the tutor settings of that day);
    `current_system_prompt` stands in only for a reply stored before prompts were recorded."""
    turns: list[dict] = []
    provenance: list[dict] = []
    last_trained = None
    system_prompt = current_system_prompt
    for message in conversation.messages.all():
        if not _usable(message):
            continue
        if message.sender == Message.Sender.STUDENT:
            if turns and turns[-1]["role"] == "user":
                turns[-1]["content"] += "\n\n" + message.content_scrubbed
            else:
                turns.append({"role": "user", "content": message.content_scrubbed})
            continue
        if not turns or turns[-1]["role"] != "user":
            continue  # a reply to nothing we keep
        review = getattr(message, "review", None)
        if review is not None and review.decision == ReviewDecision.APPROVED:
            corrected = bool(review.correction_scrubbed.strip())
            turns.append(
                {"role": "assistant", "content": review.correction_scrubbed if corrected else message.content_scrubbed}
            )
            provenance.append({"message_id": message.id, "source": "teacher_corrected" if corrected else "original"})
            last_trained = len(turns)
            system_prompt = message.system_prompt.text if message.system_prompt_id else current_system_prompt
        else:
            turns.append({"role": "assistant", "content": message.content_scrubbed, "weight": 0})
            provenance.append({"message_id": message.id, "source": "context"})
    if last_trained is None:
        return "no_approved_reply"
    turns = turns[:last_trained]
    kept_ids = {p["message_id"] for p in provenance[: sum(1 for t in turns if t["role"] == "assistant")]}
    return Candidate(
        conversation_id=conversation.id,
        messages=[{"role": "system", "content": system_prompt}, *turns],
        provenance=[p for p in provenance if p["message_id"] in kept_ids],
    )


def _normal_text(messages: list[dict]) -> str:
    return "\n".join(re.sub(r"\s+", " ", m["content"].lower()).strip() for m in messages if m["role"] != "system")


def deduplicate(candidates: list[Candidate], *, threshold: float, report: ExportReport) -> list[Candidate]:
    """Drops exact duplicates, then near duplicates (Jaccard on word 5-grams above `threshold`),
    keeping the example with the most teacher corrections."""
    from datasketch import MinHash, MinHashLSH  # loaded when an export runs, not with every process

    ordered = sorted(candidates, key=lambda c: (-c.corrected, c.conversation_id))
    seen: set[str] = set()
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    kept: list[Candidate] = []
    for candidate in ordered:
        text = _normal_text(candidate.messages)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen:
            report.dropped["exact_duplicate"] += 1
            continue
        words = text.split()
        shingles = {" ".join(words[i : i + 5]) for i in range(max(1, len(words) - 4))}
        signature = MinHash(num_perm=128)
        for shingle in shingles:
            signature.update(shingle.encode())
        if lsh.query(signature):
            report.dropped["near_duplicate"] += 1
            continue
        seen.add(digest)
        lsh.insert(str(candidate.conversation_id), signature)
        kept.append(candidate)
    return sorted(kept, key=lambda c: c.conversation_id)


# -- validation ------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _tokenizer(model_dir: str):
    from transformers import AutoTokenizer  # heavy: loaded when an export runs, not with every process

    return AutoTokenizer.from_pretrained(model_dir)


class TokenCounter:
    """Tokens of a whole example as the trainer will see it: the base model's tokenizer and
    the project's chat template for that model."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.tokenizer = _tokenizer(str(model_dir))
        self.template = chat_template_text(model_dir, settings.MODEL_CHAT_TEMPLATE)

    def __call__(self, messages: list[dict]) -> int:
        plain = [{"role": m["role"], "content": m["content"]} for m in messages]
        ids = self.tokenizer.apply_chat_template(plain, chat_template=self.template, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)


def example_problem(messages: list[dict], *, tokens: int, max_tokens: int) -> str | None:
    """Why an example cannot be trained on, or None. Mirrors mistral-finetune's checks."""
    if not messages:
        return "empty"
    body = messages[1:] if messages[0]["role"] == "system" else messages
    if not body:
        return "no_turns"
    for index, message in enumerate(body):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            return "roles_do_not_alternate"
        if not str(message.get("content", "")).strip():
            return "empty_message"
        if "weight" in message and (message["role"] != "assistant" or message["weight"] not in (0, 1)):
            return "bad_weight"
    if body[-1]["role"] != "assistant":
        return "last_turn_not_assistant"
    if all(m.get("weight", 1) == 0 for m in body if m["role"] == "assistant"):
        return "nothing_to_train"
    if tokens > max_tokens:
        return "too_long"
    return None


TRUNCATION_MARK = " […] "


def example_fit(
    messages: list[dict], *, count: Callable[[list[dict]], int], max_tokens: int
) -> tuple[list[dict], int, str | None]:
    """The example shortened to `max_tokens`, its token count, and how it was shortened (None:
    untouched). Earlier exchanges go first (the trained last reply and its question stay); then
    the longest student message loses its middle; the tutor's trained reply is never cut.
    Returns a count above `max_tokens` when even that does not fit (the caller drops it)."""
    tokens = count(messages)
    if tokens <= max_tokens:
        return messages, tokens, None
    how = None
    messages = [dict(m) for m in messages]
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    body = messages[len(system) :]
    # Whole user/assistant pairs off the front, keeping the last pair and at least one trained reply.
    while len(body) > 2 and tokens > max_tokens:
        rest = body[2:]
        if all(m.get("weight", 1) == 0 for m in rest if m["role"] == "assistant"):
            break
        body = rest
        tokens = count(system + body)
        how = "earlier_turns_removed"
    students = [m for m in body if m["role"] == "user"]
    while tokens > max_tokens and students:
        longest = max(students, key=lambda m: len(m["content"]))
        text = longest["content"]
        excess_share = (tokens - max_tokens) / tokens
        cut = max(16, int(len(text) * excess_share * 1.15) + len(TRUNCATION_MARK))
        if cut >= len(text) - 32:
            break  # nothing sensible left of the question
        keep = (len(text) - cut) // 2
        longest["content"] = text[:keep].rstrip() + TRUNCATION_MARK + text[len(text) - keep :].lstrip()
        tokens = count(system + body)
        how = "student_message_shortened"
    return system + body, tokens, how


# -- the export -------------------------------------------------------------------------------------


def _split(candidates: list[Candidate], *, fraction: float, seed: int) -> None:
    """Whole conversations to the held-out side, chosen by a seeded hash of their id."""
    if fraction <= 0 or len(candidates) < 2:
        return
    ranked = sorted(candidates, key=lambda c: hashlib.sha256(f"{seed}:{c.conversation_id}".encode()).hexdigest())
    count = min(len(candidates) - 1, max(1, round(len(candidates) * fraction)))
    for candidate in ranked[:count]:
        candidate.split = DatasetExample.Split.EVAL


def _write_atomic(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def dataset_export(
    *,
    course: Course,
    out: Path | None = None,
    eval_fraction: float | None = None,
    requested_by: Person | None = None,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _line: None,
) -> DatasetExport:
    """Builds, validates and writes the course's dataset; records the export and its lines."""
    tutor_settings = tutor_settings_get(course_id=course.id)
    if not tutor_settings.training_consent:
        raise TrainingNotAllowed(
            "This course's teachers have not allowed its conversations to be used for training. "
            "A teacher or administrator can turn it on in the course's review page.",
            course_id=course.id,
        )
    fraction = settings.TRAINING_EVAL_FRACTION if eval_fraction is None else eval_fraction
    if not 0 <= fraction < 1:
        raise DomainError("The held-out fraction must be at least 0 and below 1.", code="bad_eval_fraction")
    model_dir = base_model_dir()
    report = ExportReport(base_model=str(model_dir), max_tokens=settings.TRAINING_MAX_SEQ_TOKENS)
    system_prompt = system_prompt_for(tutor_settings, course=course)

    opted_out = Membership.objects.filter(course=course, training_opt_out=True).values("person_id")
    conversations = Conversation.objects.filter(course=course).order_by("id")
    report.conversations = conversations.count()
    report.skipped["student_opted_out"] = conversations.filter(person_id__in=opted_out).count()
    usable = conversations.exclude(person_id__in=opted_out).prefetch_related(
        Prefetch("messages", queryset=Message.objects.select_related("review", "system_prompt").order_by("id"))
    )
    candidates: list[Candidate] = []
    for conversation in usable.iterator(chunk_size=200):
        outcome = conversation_example(conversation=conversation, current_system_prompt=system_prompt)
        if isinstance(outcome, str):
            report.skipped[outcome] += 1
        else:
            candidates.append(outcome)
    progress(f"{len(candidates)} conversations with approved replies out of {report.conversations}")

    candidates = deduplicate(candidates, threshold=settings.TRAINING_NEAR_DUPLICATE_THRESHOLD, report=report)
    count_tokens = TokenCounter(model_dir)
    valid: list[Candidate] = []
    for candidate in candidates:
        problem = example_problem(candidate.messages, tokens=0, max_tokens=report.max_tokens)
        if problem is None:
            candidate.messages, candidate.tokens, how = example_fit(
                candidate.messages, count=count_tokens, max_tokens=report.max_tokens
            )
            problem = "too_long" if candidate.tokens > report.max_tokens else None
            if how and not problem:
                report.shortened[how] += 1
        if problem:
            report.dropped[problem] += 1
        else:
            valid.append(candidate)
    if not valid:
        raise EmptyDataset(
            "No exchange of this course is ready for training yet: teachers approve replies on the review page.",
            report=report.as_dict(),
        )
    _split(valid, fraction=fraction, seed=seed)
    train = [c for c in valid if c.split == DatasetExample.Split.TRAIN]
    held_out = [c for c in valid if c.split == DatasetExample.Split.EVAL]
    token_counts = sorted(c.tokens for c in valid)
    train_tokens = sum(c.tokens for c in train)
    report.kept = {"train": len(train), "eval": len(held_out)}
    report.tokens = {
        "total": sum(token_counts),
        "train": train_tokens,
        "mean": round(statistics.mean(token_counts), 1),
        "max": token_counts[-1],
        "p95": token_counts[min(len(token_counts) - 1, math.ceil(0.95 * len(token_counts)) - 1)],
    }
    report.estimate = training_estimate(
        base_model=str(model_dir),
        lengths=[c.tokens for c in train],
        eval_tokens=sum(c.tokens for c in held_out),
        eval_examples=len(held_out),
    )

    if out is None:
        stamp = timezone.now().strftime("%Y%m%dT%H%M%S")
        out = Path(settings.TRAINING_DATA_DIR) / f"course-{course.id}" / f"dataset-{stamp}.jsonl"
    out = Path(out).resolve()
    eval_path, report_path = sibling_paths(out)
    with transaction.atomic():
        export = DatasetExport.objects.create(
            course=course,
            requested_by=requested_by,
            train_path=str(out),
            eval_path=str(eval_path) if held_out else "",
            eval_fraction=fraction,
            base_model=report.base_model,
            max_tokens=report.max_tokens,
            train_examples=len(train),
            eval_examples=len(held_out),
            report=report.as_dict(),
        )
        DatasetExample.objects.bulk_create(
            DatasetExample(
                export=export,
                conversation_id=c.conversation_id,
                split=c.split,
                line=line,
                content_sha256=hashlib.sha256(c.line().encode()).hexdigest(),
                tokens=c.tokens,
                provenance=c.provenance,
            )
            for split_items in (train, held_out)
            for line, c in enumerate(split_items, start=1)
        )
        _write_atomic(out, [c.line() for c in train])
        if held_out:
            _write_atomic(eval_path, [c.line() for c in held_out])
        _write_atomic(report_path, [json.dumps({"export_id": export.id, **report.as_dict()}, indent=2)])
    progress(f"wrote {len(train)} training and {len(held_out)} held-out examples to {out}")
    return export


def exports_purge(*, export_ids: list[int]) -> None:
    """Marks the exports purged and deletes their files once the transaction commits."""
    exports = list(DatasetExport.objects.filter(pk__in=export_ids, status=DatasetExport.Status.READY))
    DatasetExport.objects.filter(pk__in=[e.pk for e in exports]).update(
        status=DatasetExport.Status.PURGED, purged_at=timezone.now()
    )
    paths = []
    for export in exports:
        train = Path(export.train_path)
        paths += [train, *sibling_paths(train)]
        if export.eval_path:
            paths.append(Path(export.eval_path))

    def _delete() -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    transaction.on_commit(_delete)


def report_lines(report: dict) -> list[str]:
    """The validation report in words, for the command line and the admin page."""
    lines = [
        f"conversations in course: {report['conversations']}",
        f"kept: {report['kept'].get('train', 0)} training, {report['kept'].get('eval', 0)} held-out examples",
    ]
    for reason, number in sorted(report["skipped_conversations"].items()):
        if number:
            lines.append(f"conversations left out ({reason.replace('_', ' ')}): {number}")
    for how, number in sorted((report.get("shortened") or {}).items()):
        lines.append(f"examples shortened to fit {report['max_tokens']} tokens ({how.replace('_', ' ')}): {number}")
    for reason, number in sorted(report["dropped"].items()):
        if reason == "too_long":
            lines.append(
                f"examples dropped (too long: the trained reply alone exceeds {report['max_tokens']} tokens): {number}"
            )
        else:
            lines.append(f"examples dropped ({reason.replace('_', ' ')}): {number}")
    tokens = report.get("tokens") or {}
    if tokens:
        lines.append(
            f"tokens: {tokens['total']} in all, {tokens['train']} to train on; "
            f"mean {tokens['mean']}, p95 {tokens['p95']}, max {tokens['max']} (limit {report['max_tokens']})"
        )
    estimate = report.get("estimate") or {}
    if estimate.get("seconds") is not None:
        lines.append(estimate_words(estimate))
    return lines
