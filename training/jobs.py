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

import logging
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from serving.adapters import AdapterError, adapter_promote, adapter_reject
from serving.models import AdapterVersion
from training.models import DatasetExport, JobEvent, JobMetric, TrainingJob
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
            course=course, dataset=dataset, requested_by=requested_by, overrides=overrides or {}
        )
        job.work_dir = str(Path(settings.TRAINING_JOBS_DIR) / f"job-{job.pk}")
        job.save(update_fields=["work_dir"])
        job_event(job, f"dataset {dataset.pk}: {dataset.train_examples} examples")
        transaction.on_commit(lambda: train_adapter.delay(job.pk))
    return job


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
    job = TrainingJob.objects.filter(pk=job_id).values("started_at", "log_tail", "cancel_requested").first()
    if job is None:
        return True
    if job["started_at"] and step and total:
        elapsed = (timezone.now() - job["started_at"]).total_seconds()
        fields["eta_seconds"] = int(elapsed / step * max(total - step, 0))
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


def job_cancel(*, job_id: int) -> TrainingJob:
    job = TrainingJob.objects.filter(pk=job_id).first()
    if job is None:
        raise NotFound("No such training job.")
    TrainingJob.objects.filter(pk=job_id).update(cancel_requested=True)
    job_finish(job_id=job_id, to=State.CANCELLED, from_states=(State.QUEUED,), message="cancelled")
    job.refresh_from_db()
    return job


def gate_passes(evaluation: dict) -> bool:
    """Automatic promotion: the candidate's held-out loss beats the adapter in service (or, for a
    course's first adapter, the base model) by TRAINING_GATE_MARGIN (relative)."""
    candidate = evaluation.get("candidate_loss")
    reference = evaluation.get("active_loss") or evaluation.get("base_loss")
    if candidate is None or reference is None:
        return False
    return candidate <= reference * (1 - settings.TRAINING_GATE_MARGIN)


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
        child = [sys.executable, "-m", "training.child", str(job.pk)]  # our own module and a job id
        process = subprocess.Popen(child, env=os.environ.copy())  # noqa: S603
        try:
            with lease_kept(job.pk):
                returncode = process.wait()
        finally:
            if process.poll() is None:  # the task itself failed (a time limit): never leave the child running
                process.terminate()
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
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
            raise RuntimeError(f"the training process exited with {returncode}; last lines:\n{job.log_tail[-1000:]}")
        evaluation = job.evaluation
        adapter = job.adapter
        if adapter is None or evaluation.get("adapter_id") != adapter.pk:
            raise RuntimeError("training finished without registering and evaluating its adapter")
        if settings.TRAINING_AUTO_PROMOTE and gate_passes(evaluation):
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
                message=f"gate passed; {adapter.name} serves the course",
            )
            return State.PROMOTED
        job_finish(
            job_id=job.pk,
            to=State.READY,
            from_states=(State.EVALUATING,),
            message="gate not passed: waiting for an administrator's decision",
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
