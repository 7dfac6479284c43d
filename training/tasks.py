"""Celery tasks of the training app (queue `gpu`: one job at a time per GPU worker).

celery -A tutor worker -Q gpu -c 1 --prefetch-multiplier 1
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from training.jobs import job_run


@shared_task(
    name="training.tasks.train_adapter",
    acks_late=True,  # a worker that dies mid-job leaves the message to be redelivered …
    reject_on_worker_lost=True,  # … and requeued, not acknowledged as done
    soft_time_limit=settings.TRAINING_SOFT_TIME_LIMIT_SECONDS,
    time_limit=settings.TRAINING_TIME_LIMIT_SECONDS,
)
def train_adapter(job_id: int) -> str:
    """Runs one training job; idempotent through `job_claim`'s guarded state change."""
    return job_run(job_id=job_id)


@shared_task(name="training.tasks.retrain_due")
def retrain_due() -> list[int]:
    """Periodic: a job for every course with enough new approved examples since its last adapter."""
    from training.schedule import courses_due_for_retraining, retrain_courses

    return retrain_courses(course_ids=courses_due_for_retraining())
