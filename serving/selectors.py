"""Reads of the adapter registry: what serves a course, what a rollback or a promotion would pick.

The registry's writes are serving.adapters; the vLLM client (serving.client) routes requests with
`active_adapter_name`.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Max, QuerySet

from serving.models import AdapterVersion

Status = AdapterVersion.Status


def active_adapter_name(*, course_id: int) -> str | None:
    """The served name of the course's active adapter; None: the base model serves it."""
    return (
        AdapterVersion.objects.filter(course_id=course_id, status=Status.ACTIVE).values_list("name", flat=True).first()
    )


def adapter_rollback_target(*, course_id: int) -> AdapterVersion | None:
    """The version a rollback makes active again; None: the base model (or nothing is active)."""
    return AdapterVersion.objects.filter(course_id=course_id, status=Status.PREVIOUS).order_by("-version").first()


def adapter_versions(*, course_id: int) -> QuerySet[AdapterVersion]:
    """Every version of the course's adapter, newest first."""
    return AdapterVersion.objects.filter(course_id=course_id).order_by("-version")


def adapter_to_promote(*, course_id: int, version: int | None = None) -> AdapterVersion | None:
    """That version of the course's adapter, or (without one) its newest candidate."""
    versions = AdapterVersion.objects.filter(course_id=course_id)
    chosen = versions.filter(version=version) if version else versions.filter(status=Status.CANDIDATE)
    return chosen.order_by("-version").first()


def adapter_versions_by_status() -> dict[str, int]:
    """How many adapter versions are in each status, every status named (0 where none): /metrics."""
    counts = dict.fromkeys(Status.values, 0)
    for row in AdapterVersion.objects.values("status").annotate(count=Count("pk")).order_by():
        counts[row["status"]] = row["count"]
    return counts


def adapter_last_activation() -> datetime | None:
    """When an adapter version last started serving a course (a promotion or a rollback)."""
    return AdapterVersion.objects.aggregate(last=Max("activated_at"))["last"]
