"""Training jobs: start, claim, progress, cancel, and the run itself.

    python manage.py train_adapter --course ID [--wait]

A job's row is the truth. The Celery task (training.tasks.train_adapter, on the `gpu` queue)
only acts through guarded state changes: `job_claim` takes a job that is queued, or one whose
worker's lease ran out (the worker died), so a redelivered message resumes the job from its
last checkpoint or does nothing; two workers never train the same job at once.

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
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from serving.adapters import AdapterError, adapter_promote, adapter_reject
from serving.models import AdapterVersion
from training.models import DatasetExample, DatasetExport, JobEvent, JobMetric, TrainingJob
from tutor.errors import DomainError, NotFound
from tutor.models import Course, Person

logger = logging.getLogger(__name__)
State = TrainingJob.State
SERVED = (AdapterVersion.Status.ACTIVE, AdapterVersion.Status.PREVIOUS, AdapterVersion.Status.RETIRED)


def _lease() -> timedelta:
    return timedelta(seconds=settings.TRAINING_LEASE_SECONDS)


@contextmanager
def lease_kept(job_id: int):
    """Renews the job's lease while this worker is alive; if it dies, the lease runs out and a
    redelivered task may take the job over (resuming from its last checkpoint)."""
    done = threading.Event()

    def renew() -> None:
        from django.db import connection

        while not done.wait(settings.TRAINING_LEASE_SECONDS / 3):
            TrainingJob.objects.filter(pk=job_id).update(lease_until=timezone.now() + _lease())
        connection.close()

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


def job_event(job: TrainingJob, message: str = "") -> None:
    JobEvent.objects.create(job=job, state=job.state, message=message[:500])


def job_transition(*, job_id: int, to: str, from_states: tuple, message: str = "", **fields) -> bool:
    """Moves the job to `to` only if it is in one of `from_states`; records the event."""
    changed = TrainingJob.objects.filter(pk=job_id, state__in=from_states).update(
        state=to, updated_at=timezone.now(), **fields
    )
    if changed:
        JobEvent.objects.create(job_id=job_id, state=to, message=message[:500])
    return bool(changed)


def job_finish(*, job_id: int, to: str, from_states: tuple, message: str = "", **fields) -> bool:
    """Moves the job to a final state: records when it ended and releases its lease."""
    return job_transition(
        job_id=job_id,
        to=to,
        from_states=from_states,
        message=message,
        finished_at=timezone.now(),
        lease_until=None,
        phase="",
        **fields,
    )


def training_job_start(
    *, course: Course, requested_by: Person | None = None, overrides: dict | None = None
) -> TrainingJob:
    """Exports the course's dataset and queues a job; the task is sent once this commits."""
    from training.datasets import dataset_export
    from training.tasks import train_adapter

    if TrainingJob.objects.filter(course=course, state__in=TrainingJob.ACTIVE_STATES).exists():
        raise JobConflict("This course already has a training job in progress.")
    dataset = dataset_export(course=course, requested_by=requested_by)
    with transaction.atomic():
        job = TrainingJob.objects.create(
            course=course,
            dataset=dataset,
            requested_by=requested_by,
            overrides=overrides or {},
            estimate_seconds=_dataset_estimate(dataset=dataset, overrides=overrides or {}).get("seconds"),
            phase="waiting for a training worker",
        )
        job.work_dir = str(Path(settings.TRAINING_JOBS_DIR) / f"job-{job.pk}")
        job.save(update_fields=["work_dir"])
        job_event(job, f"dataset {dataset.pk}: {dataset.train_examples} examples")
        transaction.on_commit(lambda: train_adapter.delay(job.pk))
    return job


def _dataset_estimate(*, dataset: DatasetExport, overrides: dict) -> dict:
    """The export's estimate, made again when the job sets its own training settings."""
    if not overrides:
        return dataset.report.get("estimate") or {}
    from training.estimates import training_estimate

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
            job.state, job.finished_at, job.lease_until = State.CANCELLED, now, None
            job.save()
            job_event(job, message)
            if job.adapter_id:
                adapter_reject(adapter_id=job.adapter_id)
            return None
        resumed = job.state != State.QUEUED
        job.state = State.VALIDATING
        job.lease_until = now + _lease()
        job.attempts += 1
        job.started_at = job.started_at or now
        job.save()
        job_event(job, "resumed after its worker stopped" if resumed else "started")
    return job


def job_lease_wait(*, job_id: int) -> float | None:
    """Seconds until the job's current lease runs out, when it is active and held; else None.
    A task redelivered while the lease holds (its worker may have just died) retries after it."""
    job = TrainingJob.objects.filter(pk=job_id, state__in=TrainingJob.ACTIVE_STATES).values("lease_until").first()
    if job is None or job["lease_until"] is None:
        return None
    return max((job["lease_until"] - timezone.now()).total_seconds(), 0.0) + 1.0


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
    job["evaluation_seconds"] = _evaluation_seconds(job_id=job_id)
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


def _evaluation_seconds(*, job_id: int) -> float:
    """The gate's evaluation after training: as last measured for the base model, else as the
    export estimated it."""
    from training.estimates import throughput_latest

    job = TrainingJob.objects.filter(pk=job_id).values("dataset__base_model", "dataset__report").first()
    if not job or not job["dataset__base_model"]:
        return 0.0
    profile = throughput_latest(base_model=job["dataset__base_model"])
    if profile and profile.evaluation_seconds:
        return profile.evaluation_seconds
    return float(((job["dataset__report"] or {}).get("estimate") or {}).get("evaluation_seconds") or 0.0)


def job_cancel(*, job_id: int) -> TrainingJob:
    job = TrainingJob.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFound("No such training job.")
    TrainingJob.objects.filter(pk=job_id).update(cancel_requested=True)
    job_finish(job_id=job_id, to=State.CANCELLED, from_states=(State.QUEUED,), message="cancelled")
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


def job_run(*, job_id: int) -> str:
    """The whole job, for the Celery task: claim → validate → train (child) → register →
    evaluate (child) → gate → promote or wait for an admin."""
    job = job_claim(job_id=job_id)
    if job is None:
        return "skipped"
    if job.adapter is not None and job.adapter.status in SERVED:
        # The worker died between the promotion and recording it: the job is done, not retrained.
        job_finish(
            job_id=job.pk,
            to=State.PROMOTED,
            from_states=(State.VALIDATING,),
            message=f"{job.adapter.name} was promoted before the worker stopped",
        )
        return State.PROMOTED
    try:
        dataset = job.dataset
        if dataset is None or dataset.status != DatasetExport.Status.READY or not Path(dataset.train_path).exists():
            raise RuntimeError("The job's dataset is gone (purged after an erasure?); start a new job.")
        job_transition(
            job_id=job.pk,
            to=State.TRAINING,
            from_states=(State.VALIDATING,),
            message=f"{dataset.train_examples} training examples",
        )
        job_phase(job_id=job.pk, phase="starting the training process")
        child = [sys.executable, "-m", "training.child", str(job.pk)]  # our own module and a job id
        process = subprocess.Popen(child, env=child_environment())  # noqa: S603
        limit = settings.TRAINING_MEMORY_LIMIT_MB * 2**20 or None
        try:
            with lease_kept(job.pk):
                exit_ = child_wait(process, memory_limit=limit)
        finally:
            if process.poll() is None:  # the task itself failed (a time limit): never leave the child running
                process.terminate()
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
        returncode = exit_.returncode
        TrainingJob.objects.filter(pk=job.pk).update(peak_memory_bytes=exit_.peak_bytes)
        job.refresh_from_db()
        if job.cancel_requested:
            job_finish(
                job_id=job.pk,
                to=State.CANCELLED,
                from_states=TrainingJob.ACTIVE_STATES,
                message="cancelled",
            )
            if job.adapter_id:
                adapter_reject(adapter_id=job.adapter_id)
            return State.CANCELLED
        if returncode != 0:
            raise RuntimeError(child_failure(job=job, exit_=exit_, memory_limit=limit))
        evaluation = job.evaluation
        adapter = job.adapter
        if adapter is None or evaluation.get("adapter_id") != adapter.pk:
            raise RuntimeError("training finished without registering and evaluating its adapter")
        gate = gate_passes(evaluation=evaluation)
        TrainingJob.objects.filter(pk=job.pk, state=State.EVALUATING).update(
            evaluation={**evaluation, "gate": gate.as_dict()}
        )
        if settings.TRAINING_AUTO_PROMOTE and gate.passed:
            job_phase(job_id=job.pk, phase="promoting: loading the adapter into the model server")
            try:
                with lease_kept(job.pk):
                    adapter_promote(adapter=adapter)
            except AdapterError as exc:  # the model server is down, say: the adapter is still good
                job_finish(
                    job_id=job.pk,
                    to=State.READY,
                    from_states=(State.EVALUATING,),
                    message=f"gate passed, but promoting failed ({exc}); promote it when the model server is back",
                )
                return State.READY
            job_finish(
                job_id=job.pk,
                to=State.PROMOTED,
                from_states=(State.EVALUATING,),
                message=f"gate passed: {gate.summary}; {adapter.name} serves the course",
            )
            return State.PROMOTED
        job_finish(
            job_id=job.pk,
            to=State.READY,
            from_states=(State.EVALUATING,),
            message=(
                f"gate not passed: {gate.summary}" if not gate.passed else "gate passed, but automatic promotion is off"
            )
            + "; waiting for an administrator's decision",
        )
        return State.READY
    except Exception as exc:  # SoftTimeLimitExceeded and AdapterError included
        logger.exception("training job %s failed", job_id)
        job_fail(job_id=job_id, error=str(exc))
        return State.FAILED


def job_fail(*, job_id: int, error: str) -> None:
    """The job failed: recorded with its reason, and an adapter it trained but did not promote
    is rejected (and unloaded if evaluation loaded it), so no stale candidate lingers."""
    failed = job_finish(
        job_id=job_id,
        to=State.FAILED,
        from_states=TrainingJob.ACTIVE_STATES,
        message=error[:500],
        error=error,
    )
    adapter_id = TrainingJob.objects.filter(pk=job_id).values_list("adapter_id", flat=True).first()
    if failed and adapter_id:
        adapter_reject(adapter_id=adapter_id)


def job_decide(*, job_id: int, promote: bool) -> TrainingJob:
    """An administrator's decision on a job the gate did not promote. The job's row is locked for
    the decision, so two administrators deciding at once cannot both act."""
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.state != State.READY or job.adapter is None:
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


def adapter_holds_erased_data(*, adapter: AdapterVersion) -> bool:
    """True when the dataset the adapter was trained on was purged (a student in it was erased,
    or their conversations expired): a trained model is not anonymous data, so retrain it."""
    return TrainingJob.objects.filter(adapter=adapter, dataset__status=DatasetExport.Status.PURGED).exists()


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
    from training.child import FAILURE_FILE

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
