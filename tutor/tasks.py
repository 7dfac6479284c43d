"""Celery tasks of the tutor app: thin wrappers that call one service."""

from __future__ import annotations

from celery import shared_task

from tutor import alerts
from tutor.services import conversations_expire as conversations_expire_service


@shared_task(name="tutor.tasks.conversations_expire", ignore_result=False)
def conversations_expire() -> dict[str, int]:
    """Daily (CELERY_BEAT_SCHEDULE): delete conversations past RETENTION_DAYS."""
    return conversations_expire_service()


@shared_task(name="tutor.tasks.flag_escalate", ignore_result=False)
def flag_escalate(flag_id: int) -> bool:
    """Queued when an urgent flag is raised, due at its escalation time (tutor.alerts)."""
    return alerts.flag_escalate(flag_id=flag_id)


@shared_task(name="tutor.tasks.flags_escalate_due", ignore_result=False)
def flags_escalate_due() -> int:
    """Every SAFETY_ESCALATION_SWEEP_SECONDS (CELERY_BEAT_SCHEDULE): escalate flags whose own task was lost."""
    return alerts.flags_escalate_due()
