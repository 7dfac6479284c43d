"""Celery tasks of the serving app."""

from __future__ import annotations

import logging

from celery import shared_task

from serving.adapters import AdapterError, adapter_unload
from serving.models import AdapterVersion

logger = logging.getLogger(__name__)


@shared_task(name="serving.tasks.adapters_unload", acks_late=True)
def adapters_unload(names: list[str]) -> list[str]:
    """Unloads retired versions from vLLM, sent with a countdown of ADAPTER_RETIRE_GRACE_SECONDS after
    they stopped being routed to. A version made active again meanwhile is kept."""
    unloaded = []
    for adapter in AdapterVersion.objects.filter(name__in=names):
        if adapter.status in {AdapterVersion.Status.ACTIVE, AdapterVersion.Status.PREVIOUS}:
            continue
        try:
            adapter_unload(adapter.name)
            unloaded.append(adapter.name)
        except AdapterError as exc:
            logger.warning("could not unload %s: %s", adapter.name, exc)
    return unloaded
