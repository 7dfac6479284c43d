"""Celery tasks of the training app (queue `gpu`: one job at a time per GPU worker).

celery -A config worker -Q gpu -c 1 --prefetch-multiplier 1
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from training.jobs import job_run
from training.schedule import retraining_start_due
from training.selectors import job_lease_wait


@shared_task(
    bind=True,
    name="training.tasks.train_adapter",
    acks_late=True,  # a worker that dies mid-job leaves the message to be redelivered …
    reject_on_worker_lost=True,  # … and requeued, not acknowledged as done
    soft_time_limit=settings.TRAINING_SOFT_TIME_LIMIT_SECONDS,
    time_limit=settings.TRAINING_TIME_LIMIT_SECONDS,
    max_retries=None,
    # A database that is busy (SQLite's write lock) or briefly gone must not strand the job in
    # `queued`: the guarded claim makes a retry safe, so the task tries again with backoff.
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=2,
    retry_backoff_max=60,
)
def train_adapter(self, job_id: int) -> str:
    """Runs one training job; idempotent through `job_claim`'s guarded state change. Delivered
    while another worker's lease holds the job (that worker may have just died), it comes back
    when the lease runs out: the job then resumes, or the task finds it finished and skips."""
    outcome = job_run(job_id=job_id)
    if outcome == "skipped" and (wait := job_lease_wait(job_id=job_id)) is not None:
        raise self.retry(countdown=wait)
    return outcome


@shared_task(name="training.tasks.retrain_due")
def retrain_due() -> list[int]:
    """Periodic: a job for every course with enough new approved examples since its last adapter."""
    return retraining_start_due()
