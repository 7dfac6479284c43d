"""Training jobs: start, claim, progress, cancel, decide, and the run itself (the services;
their reads are in training.selectors).

    python manage.py train_adapter --course ID [--wait]

A job's row is the truth. Its states and the moves between them are listed once, next to
`TrainingJob.State` (`TrainingJob.TRANSITIONS`); every change of state goes through
`job_transition`, a guarded update that refuses a move the list does not allow. The database
holds at most one active job per course (a partial unique constraint), so two starts that race
cannot both queue one. The Celery task (training.tasks.train_adapter, on the `gpu` queue; sent by
name once the job commits) only acts through those guarded changes: `job_claim` takes a job that
is queued, or one whose worker's lease ran out (the worker died), so a redelivered message resumes
the job from its last checkpoint or does nothing; two workers never train the same job at once.

The training itself runs in a child process started fresh (`python -m training.child JOB`,
never forked: CUDA cannot start in a forked worker), so the GPU memory is returned when it
ends, whatever happened. The child writes progress to the job and stops if the job is
cancelled or its worker dies.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from serving.adapters import AdapterError, adapter_promote, adapter_reject
from serving.models import AdapterVersion
from training.datasets import dataset_export
from training.estimates import training_estimate
from training.models import DatasetExample, DatasetExport, JobEvent, JobMetric, TrainingJob
from training.selectors import job_evaluation_seconds, training_job_active, training_job_get
from training.workdir import FAILURE_FILE
from tutor.errors import DomainError, NotFound
from tutor.models import Course, Person

logger = logging.getLogger(__name__)
State = TrainingJob.State
SERVED = (AdapterVersion.Status.ACTIVE, AdapterVersion.Status.PREVIOUS, AdapterVersion.Status.RETIRED)
# Sent by name once the job's row commits: services never import tasks (training.tasks imports us).
TRAIN_TASK = "training.tasks.train_adapter"


def _lease() -> timedelta:
    return timedelta(seconds=settings.TRAINING_LEASE_SECONDS)


@contextmanager
def lease_kept(job_id: int):
    """Renews the job's lease while this worker is alive; if it dies, the lease runs out and a
    redelivered task may take the job over (resuming from its last checkpoint)."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(settings.TRAINING_LEASE_SECONDS / 3):
            TrainingJob.objects.filter(pk=job_id).update(lease_until=timezone.now() + _lease())
        connection.close()  # this thread's own connection

    thread = threading.Thread(target=renew, name=f"lease-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)


class JobConflict(DomainError):
    code = "training_job_running"
    status = 409


class InvalidTransition(ValueError):
    """A move TrainingJob.TRANSITIONS does not list: a bug in the caller, never a user's error."""


def job_transition(
    *, job_id: int, to: str, from_states: Iterable[str] | None = None, message: str = "", **fields
) -> bool:
    """The one way a job changes state. Moves it to `to` only if it is in one of `from_states`
    (by default every state TrainingJob.TRANSITIONS allows into `to`; a caller may only narrow
    them) and records the event. A job leaving the active states ends: when is recorded, its
    lease released and its phase cleared. Returns whether the job moved."""
    allowed = {state for state, targets in TrainingJob.TRANSITIONS.items() if to in targets}
    sources = allowed if from_states is None else set(from_states)
    if not sources or not sources <= allowed:
        raise InvalidTransition(f"a training job cannot move from {sorted(sources - allowed) or 'nowhere'} to {to}")
    now = timezone.now()
    if to not in TrainingJob.ACTIVE_STATES:
        leaving = {"state__in": TrainingJob.ACTIVE_STATES}
        fields = {
            "finished_at": Case(When(**leaving, then=Value(now)), default=F("finished_at")),
            "lease_until": Case(When(**leaving, then=Value(None)), default=F("lease_until")),
            "phase": Case(When(**leaving, then=Value("")), default=F("phase")),
            **fields,
        }
    changed = TrainingJob.objects.filter(pk=job_id, state__in=sources).update(state=to, updated_at=now, **fields)
    if changed:
        JobEvent.objects.create(job_id=job_id, state=to, message=message[:500])
    return bool(changed)


def job_stop(*, job_id: int, to: str, message: str, from_states: Iterable[str] | None = None, **fields) -> bool:
    """Ends the job failed or cancelled; an adapter it trained but did not promote is rejected
    (and unloaded if evaluation loaded it), so no stale candidate lingers."""
    if to not in (State.FAILED, State.CANCELLED):
        raise InvalidTransition(f"a job is stopped as failed or cancelled, not {to}")
    stopped = job_transition(job_id=job_id, to=to, from_states=from_states, message=message, **fields)
    adapter_id = TrainingJob.objects.filter(pk=job_id).values_list("adapter_id", flat=True).first()
    if stopped and adapter_id:
        adapter_reject(adapter_id=adapter_id)
    return stopped


def job_fail(*, job_id: int, error: str) -> None:
    """The job failed: recorded with its reason (a job already finished is left as it is)."""
    job_stop(job_id=job_id, to=State.FAILED, message=error[:500], error=error)


def training_job_start(
    *, course: Course, requested_by: Person | None = None, overrides: dict | None = None
) -> TrainingJob:
    """Exports the course's dataset and queues a job; the task is sent once this commits. A course
    has one active job at a time: a second start is refused, also when two starts race (the
    database's constraint refuses the second row)."""
    conflict = JobConflict("This course already has a training job in progress.")
    if training_job_active(course_id=course.pk):
        raise conflict
    overrides = overrides or {}
    dataset = dataset_export(course=course, requested_by=requested_by)
    try:
        with transaction.atomic():
            job = TrainingJob.objects.create(
                course=course,
                dataset=dataset,
                requested_by=requested_by,
                overrides=overrides,
                estimate_seconds=_dataset_estimate(dataset=dataset, overrides=overrides).get("seconds"),
                phase="waiting for a training worker",
            )
            job.work_dir = str(Path(settings.TRAINING_JOBS_DIR) / f"job-{job.pk}")
            job.save(update_fields=["work_dir"])
            JobEvent.objects.create(
                job=job, state=job.state, message=f"dataset {dataset.pk}: {dataset.train_examples} examples"
            )
            transaction.on_commit(lambda: current_app.send_task(TRAIN_TASK, args=[job.pk]))
    except IntegrityError:
        if training_job_active(course_id=course.pk):
            raise conflict from None
        raise
    return job


def _dataset_estimate(*, dataset: DatasetExport, overrides: dict) -> dict:
    """The export's estimate, made again when the job sets its own training settings."""
    if not overrides:
        return dataset.report.get("estimate") or {}
    tokens = dict.fromkeys(DatasetExample.Split.values, 0)
    lengths = []
    for split, count in dataset.examples.values_list("split", "tokens"):
        tokens[split] += count
        if split == DatasetExample.Split.TRAIN:
            lengths.append(count)
    try:
        return training_estimate(
            base_model=dataset.base_model,
            lengths=lengths,
            eval_tokens=tokens[DatasetExample.Split.EVAL],
            eval_examples=dataset.eval_examples,
            overrides=overrides,
        )
    except TypeError as exc:
        raise DomainError(f"Unknown training setting: {exc}.", code="bad_training_setting") from exc


def job_claim(*, job_id: int) -> TrainingJob | None:
    """Takes the job for this worker, or None when it is finished or held by a live worker."""
    now = timezone.now()
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            return None
        orphaned = (
            job.state in TrainingJob.ACTIVE_STATES
            and job.state != State.QUEUED
            and (job.lease_until is None or job.lease_until < now)
        )
        if job.state != State.QUEUED and not orphaned:
            return None
        if job.cancel_requested:
            message = "cancelled before it started" if job.state == State.QUEUED else "cancelled"
            job_stop(job_id=job.pk, to=State.CANCELLED, from_states=(job.state,), message=message)
            return None
        job_transition(
            job_id=job.pk,
            to=State.VALIDATING,
            from_states=(job.state,),
            message="resumed after its worker stopped" if orphaned else "started",
            lease_until=now + _lease(),
            attempts=F("attempts") + 1,
            started_at=job.started_at or now,
        )
    job.refresh_from_db()
    return job


def job_phase(*, job_id: int, phase: str) -> None:
    """What the job is doing now, in words (loading the base model, training, evaluating…)."""
    job = TrainingJob.objects.filter(pk=job_id).values("log_tail").first()
    if job is not None:
        stamp = timezone.localtime().strftime("%H:%M:%S")
        log_tail = "\n".join([*job["log_tail"].splitlines(), f"{stamp} {phase}"][-20:])
        TrainingJob.objects.filter(pk=job_id).update(phase=phase[:100], log_tail=log_tail)


def job_eta(*, step: int, total: int, line: dict, job: dict) -> int | None:
    """Seconds left: the steps to go at the pace measured so far (evaluations apart), the
    evaluations to go at their measured length, then the gate's evaluation as last measured.
    Before a step has been timed: the estimate made at the start, less the time gone."""
    seconds_per_step = line.get("seconds_per_step")
    after = job["evaluation_seconds"] or 0.0
    if not seconds_per_step:
        if job["estimate_seconds"] and job["started_at"]:
            elapsed = (timezone.now() - job["started_at"]).total_seconds()
            return max(int(job["estimate_seconds"] - elapsed), 0)
        return None
    remaining = max(total - step, 0)
    every = int(line.get("eval_every") or 0)
    evaluations = (total // every - step // every) if every else 0
    return int(remaining * seconds_per_step + evaluations * float(line.get("eval_seconds") or 0) + after)


def job_progress(*, job_id: int, line: dict) -> bool:
    """One log line from the trainer: progress, ETA, the loss curve, the lease. Returns whether
    the job should stop (cancelled)."""
    step = int(line.get("step") or 0)
    total = int(line.get("max_steps") or 0)
    fields: dict = {"step": step, "total_steps": total}
    if "loss" in line:
        fields["train_loss"] = float(line["loss"])
    if "eval_loss" in line:
        fields["eval_loss"] = float(line["eval_loss"])
    if "learning_rate" in line:
        fields["learning_rate"] = float(line["learning_rate"])
    job = (
        TrainingJob.objects.filter(pk=job_id)
        .values("started_at", "log_tail", "cancel_requested", "estimate_seconds")
        .first()
    )
    if job is None:
        return True
    job["evaluation_seconds"] = job_evaluation_seconds(job_id=job_id)
    if step and total:
        fields["eta_seconds"] = job_eta(step=step, total=total, line=line, job=job)
    summary = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in line.items())
    fields["log_tail"] = "\n".join([*job["log_tail"].splitlines(), summary][-20:])
    TrainingJob.objects.filter(pk=job_id).update(**fields)
    if "loss" in line or "eval_loss" in line:
        JobMetric.objects.create(
            job_id=job_id,
            step=step,
            train_loss=fields.get("train_loss"),
            eval_loss=fields.get("eval_loss"),
            learning_rate=fields.get("learning_rate"),
        )
    return job["cancel_requested"]


def job_cancel(*, course_id: int, job_id: int) -> TrainingJob:
    """Asks the course's job to stop: a queued job is cancelled at once, a running one by its
    worker at the next step (the child sees `cancel_requested`)."""
    job = training_job_get(course_id=course_id, job_id=job_id)
    TrainingJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    job_transition(job_id=job.pk, to=State.CANCELLED, from_states=(State.QUEUED,), message="cancelled")
    job.refresh_from_db()
    return job


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict and why: what blocked it, or (when it passed) the numbers it passed on."""

    passed: bool
    reasons: tuple[str, ...]

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)

    def as_dict(self) -> dict:
        return {"passed": self.passed, "reasons": list(self.reasons)}


def gate_passes(*, evaluation: dict) -> GateDecision:
    """Automatic promotion needs all of: the candidate's held-out loss beats the adapter in service
    (or, for a course's first adapter, the base model) by TRAINING_GATE_MARGIN (relative); every
    one of its sample replies to the held-out questions came back from vLLM, and none is empty;
    their chrF against the teachers' replies is at least the current tutor's plus
    TRAINING_GATE_CHRF_MARGIN (points)."""
    blockers: list[str] = []
    checks: list[str] = []
    candidate = evaluation.get("candidate_loss")
    in_service = evaluation.get("active_loss") is not None
    reference = evaluation.get("active_loss") if in_service else evaluation.get("base_loss")
    against = "the adapter in service" if in_service else "the base model"
    if candidate is None or reference is None:
        blockers.append("no held-out loss was measured")
    elif candidate <= reference * (1 - settings.TRAINING_GATE_MARGIN):
        checks.append(f"held-out loss {candidate:.4g} vs {reference:.4g} ({against})")
    else:
        margin = f"{settings.TRAINING_GATE_MARGIN:.0%}"
        blockers.append(f"held-out loss {candidate:.4g} is not {margin} below {against}'s {reference:.4g}")
    replies = evaluation.get("replies") or {}
    mine, theirs = replies.get("candidate"), replies.get("current")
    if evaluation.get("samples_error"):
        blockers.append(f"the sample replies could not be produced ({evaluation['samples_error'][:200]})")
    elif not mine or not mine.get("samples") or not theirs:
        blockers.append("no sample replies were scored")
    else:
        count = mine["samples"]
        if mine["failed"]:
            why = ", ".join(mine.get("errors") or [])[:150]
            blockers.append(f"{mine['failed']} of {count} sample replies failed" + (f" ({why})" if why else ""))
        if mine["empty"]:
            blockers.append(f"{mine['empty']} of {count} sample replies were empty")
        margin = settings.TRAINING_GATE_CHRF_MARGIN
        if mine["chrf"] is None or theirs["chrf"] is None or mine["chrf"] < theirs["chrf"] + margin:
            below = f"{margin:g} points above " if margin else "at least "
            blockers.append(
                f"chrF {mine['chrf']} against the teachers' replies is not {below}the current tutor's {theirs['chrf']}"
            )
        else:
            checks.append(f"chrF {mine['chrf']} vs {theirs['chrf']} (current tutor) over {count} replies")
    return GateDecision(passed=not blockers, reasons=tuple(blockers or checks))


@dataclass(frozen=True)
class JobEnd:
    """How an attempt at a job ends: the state it moves to, from which, and why."""

    state: str
    from_states: tuple[str, ...]
    message: str


def job_run(*, job_id: int) -> str:
    """The whole job, for the Celery task: claim → validate → train (child) → register →
    evaluate (child) → gate → promote or wait for an admin. However it ends (an exception
    included), the end is one guarded transition, made here."""
    job = job_claim(job_id=job_id)
    if job is None:
        return "skipped"
    try:
        end = _job_attempt(job)
    except Exception as exc:  # SoftTimeLimitExceeded and AdapterError included
        logger.exception("training job %s failed", job_id)
        job_fail(job_id=job.pk, error=str(exc))
        return State.FAILED
    if end.state == State.CANCELLED:
        job_stop(job_id=job.pk, to=end.state, from_states=end.from_states, message=end.message)
    else:
        job_transition(job_id=job.pk, to=end.state, from_states=end.from_states, message=end.message)
    return end.state


def _job_attempt(job: TrainingJob) -> JobEnd:
    """One attempt at a claimed job, up to how it ends; a failure raises (the message says why)."""
    if job.adapter is not None and job.adapter.status in SERVED:
        # The worker died between the promotion and recording it: the job is done, not retrained.
        return JobEnd(State.PROMOTED, (State.VALIDATING,), f"{job.adapter.name} was promoted before the worker stopped")
    dataset = job.dataset
    if dataset is None or dataset.status != DatasetExport.Status.READY or not Path(dataset.train_path).exists():
        raise RuntimeError("The job's dataset is gone (purged after an erasure?); start a new job.")
    job_transition(
        job_id=job.pk,
        to=State.TRAINING,
        from_states=(State.VALIDATING,),
        message=f"{dataset.train_examples} training examples",
    )
    limit = settings.TRAINING_MEMORY_LIMIT_MB * 2**20 or None
    exit_ = _child_run(job_id=job.pk, memory_limit=limit)
    job.refresh_from_db()
    if job.cancel_requested:
        return JobEnd(State.CANCELLED, TrainingJob.ACTIVE_STATES, "cancelled")
    if exit_.returncode != 0:
        raise RuntimeError(child_failure(job=job, exit_=exit_, memory_limit=limit))
    evaluation = job.evaluation
    adapter = job.adapter
    if adapter is None or evaluation.get("adapter_id") != adapter.pk:
        raise RuntimeError("training finished without registering and evaluating its adapter")
    gate = gate_passes(evaluation=evaluation)
    TrainingJob.objects.filter(pk=job.pk, state=State.EVALUATING).update(
        evaluation={**evaluation, "gate": gate.as_dict()}
    )
    if not (settings.TRAINING_AUTO_PROMOTE and gate.passed):
        verdict = "gate passed, but automatic promotion is off" if gate.passed else f"gate not passed: {gate.summary}"
        return JobEnd(State.READY, (State.EVALUATING,), verdict + "; waiting for an administrator's decision")
    job_phase(job_id=job.pk, phase="promoting: loading the adapter into the model server")
    try:
        with lease_kept(job.pk):
            adapter_promote(adapter=adapter)
    except AdapterError as exc:  # the model server is down, say: the adapter is still good
        return JobEnd(
            State.READY,
            (State.EVALUATING,),
            f"gate passed, but promoting failed ({exc}); promote it when the model server is back",
        )
    return JobEnd(State.PROMOTED, (State.EVALUATING,), f"gate passed: {gate.summary}; {adapter.name} serves the course")


def _child_run(*, job_id: int, memory_limit: int | None) -> ChildExit:
    """Trains and evaluates in a fresh process (`python -m training.child JOB`), keeping the
    lease while it runs; records its peak memory."""
    job_phase(job_id=job_id, phase="starting the training process")
    child = [sys.executable, "-m", "training.child", str(job_id)]  # our own module and a job id
    process = subprocess.Popen(child, env=child_environment())  # noqa: S603
    try:
        with lease_kept(job_id):
            exit_ = child_wait(process, memory_limit=memory_limit)
    finally:
        if process.poll() is None:  # the task itself failed (a time limit): never leave the child running
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    TrainingJob.objects.filter(pk=job_id).update(peak_memory_bytes=exit_.peak_bytes)
    return exit_


def job_decide(*, course_id: int, job_id: int, promote: bool) -> TrainingJob:
    """An administrator's decision on a job of their course the gate did not promote. The job's
    row is locked for the decision, so two administrators deciding at once cannot both act."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id, course_id=course_id).first()
        if job is None:
            raise NotFound("No such training job in this course.")
        if job.state != State.READY or job.adapter is None:
            raise DomainError(
                "Only a finished job waiting for a decision can be promoted or rejected.",
                code="job_not_ready",
                status=409,
            )
        if promote:
            adapter_promote(adapter=job.adapter)
            job_transition(job_id=job.pk, to=State.PROMOTED, from_states=(State.READY,), message="promoted by an admin")
        else:
            adapter_reject(adapter_id=job.adapter_id)
            job_transition(job_id=job.pk, to=State.REJECTED, from_states=(State.READY,), message="rejected by an admin")
    job.refresh_from_db()
    return job


# -- the training process ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildExit:
    returncode: int
    peak_bytes: int  # the process's peak resident memory
    killed_for_memory: bool  # stopped here for passing TRAINING_MEMORY_LIMIT_MB


# jemalloc, where the system has it (Debian and Ubuntu: the libjemalloc2 package).
JEMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
)


def child_environment() -> dict:
    """The worker's environment for the training process, with a memory allocator that returns
    what PyTorch frees. glibc's malloc keeps the CPU tensors of each step in a heap that never
    shrinks: on the demo model the process then holds about 1 GiB more than it uses. jemalloc
    (preloaded when installed) returns it at almost no cost in speed; without it, glibc is told to
    hand blocks of 64 KiB and more back at once, which bounds memory as well but costs about a
    third of the training speed on a CPU (bench/memory.py, docs/benchmarks.md). TRAINING_MALLOC
    chooses: `jemalloc`, `glibc` (that tuning), or `system` (change nothing)."""
    env = os.environ.copy()
    choice = settings.TRAINING_MALLOC
    jemalloc = next((path for path in JEMALLOC_PATHS if Path(path).exists()), None)
    if choice in ("auto", "jemalloc") and jemalloc:
        env["LD_PRELOAD"] = " ".join(filter(None, [jemalloc, env.get("LD_PRELOAD")]))
    elif choice in ("auto", "glibc"):
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    return env


def _resident_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def child_wait(process: subprocess.Popen, *, memory_limit: int | None, poll_seconds: float = 0.25) -> ChildExit:
    """Waits for the training process, watching its resident memory: past `memory_limit` it is
    killed (and says so) before the machine runs out. Its peak comes from the kernel's own
    accounting (wait4's ru_maxrss), which also covers a kill by the kernel's OOM killer."""
    peak = 0
    killed = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            peak = max(peak, usage.ru_maxrss * 1024)
            return ChildExit(returncode=process.returncode, peak_bytes=peak, killed_for_memory=killed)
        resident = _resident_bytes(process.pid)
        peak = max(peak, resident)
        if memory_limit and resident > memory_limit and not killed:
            killed = True
            process.kill()
        time.sleep(poll_seconds)


def child_failure(*, job: TrainingJob, exit_: ChildExit, memory_limit: int | None) -> str:
    """Why the training process failed, in words an administrator can act on."""
    gib = 2**30
    peak = f"{exit_.peak_bytes / gib:.2f} GiB"
    if exit_.killed_for_memory:
        return (
            f"Out of memory: the training process reached {peak}, over this deployment's limit of "
            f"{memory_limit / gib:.2f} GiB (TRAINING_MEMORY_LIMIT_MB), and was stopped. Lower "
            "TRAINING_TOKENS_PER_STEP, or raise the limit if the machine has the memory. Nothing was registered."
        )
    explained = Path(job.work_dir) / FAILURE_FILE
    if explained.exists():
        try:
            return json.loads(explained.read_text())["message"]
        except (ValueError, KeyError):
            pass
    if exit_.returncode == -signal.SIGKILL:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return (
            f"Out of memory: the training process was killed by the system (SIGKILL) at a peak of {peak}; "
            f"this machine has {total / gib:.1f} GiB in all. Lower TRAINING_TOKENS_PER_STEP or set "
            "TRAINING_MEMORY_LIMIT_MB so that jobs are refused or stopped before the system has to. "
            "Nothing was registered."
        )
    how = f"was stopped by signal {-exit_.returncode}" if exit_.returncode < 0 else f"exited with {exit_.returncode}"
    tail = job.log_tail[-1000:].strip() or "(it printed no progress; see the worker's log)"
    return f"The training process {how} (peak memory {peak}); its last lines:\n{tail}"
