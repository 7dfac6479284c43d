"""Celery tasks of the tutor app: thin wrappers that call one service."""

from __future__ import annotations

from celery import shared_task

from tutor.services import conversations_expire as conversations_expire_service


@shared_task(name="tutor.tasks.conversations_expire", ignore_result=False)
def conversations_expire() -> dict[str, int]:
    """Daily (CELERY_BEAT_SCHEDULE): delete conversations past RETENTION_DAYS."""
    return conversations_expire_service()
