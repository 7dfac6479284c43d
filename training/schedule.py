"""Scheduled retraining: a course is due when enough newly approved replies have arrived since
its last training job (TRAINING_RETRAIN_MIN_NEW_EXAMPLES); run daily by Celery beat."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db.models import Max

from training.models import TrainingJob
from tutor.errors import DomainError
from tutor.models import Course, ReplyReview, ReviewDecision

logger = logging.getLogger(__name__)


def courses_due_for_retraining() -> list[int]:
    due = []
    busy = set(TrainingJob.objects.filter(state__in=TrainingJob.ACTIVE_STATES).values_list("course_id", flat=True))
    last_job = dict(
        TrainingJob.objects.values("course_id").annotate(last=Max("created_at")).values_list("course_id", "last")
    )
    for course_id in Course.objects.filter(tutor_settings__training_consent=True).values_list("id", flat=True):
        if course_id in busy:
            continue
        approved = ReplyReview.objects.filter(
            decision=ReviewDecision.APPROVED, message__conversation__course_id=course_id
        )
        if course_id in last_job:
            approved = approved.filter(reviewed_at__gt=last_job[course_id])
        if approved.count() >= settings.TRAINING_RETRAIN_MIN_NEW_EXAMPLES:
            due.append(course_id)
    return due


def retrain_courses(*, course_ids: list[int]) -> list[int]:
    from training.jobs import training_job_start

    started = []
    for course in Course.objects.filter(pk__in=course_ids):
        try:
            started.append(training_job_start(course=course).pk)
        except DomainError as exc:
            logger.info("course %s not retrained: %s", course.pk, exc.message)
    return started
