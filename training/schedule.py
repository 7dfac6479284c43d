"""Scheduled retraining: a course is due when enough newly approved replies have arrived since
its last training job (TRAINING_RETRAIN_MIN_NEW_EXAMPLES; training.selectors decides which);
run daily by Celery beat (training.tasks.retrain_due)."""

from __future__ import annotations

import logging

from training.jobs import training_job_start
from training.selectors import courses_due_for_retraining
from tutor.errors import DomainError
from tutor.models import Course

logger = logging.getLogger(__name__)


def retraining_start_due() -> list[int]:
    """A job for every course due for retraining; the ids of the jobs started. A course that
    cannot start one now (its data is not ready, a job started meanwhile) is logged and skipped."""
    started = []
    for course in Course.objects.filter(pk__in=courses_due_for_retraining()):
        try:
            started.append(training_job_start(course=course).pk)
        except DomainError as exc:
            logger.info("course %s not retrained: %s", course.pk, exc.message)
    return started
