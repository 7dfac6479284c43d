"""Celery tasks of the serving app: each parses its arguments and calls one registry service."""

from __future__ import annotations

from celery import shared_task

from serving.adapters import UNLOAD_TASK, adapters_retire


@shared_task(name=UNLOAD_TASK, acks_late=True)
def adapters_unload(names: list[str]) -> list[str]:
    """Sent with a countdown of ADAPTER_RETIRE_GRACE_SECONDS after the versions stopped being routed to."""
    return adapters_retire(names=names)
