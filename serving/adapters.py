"""Adapter registry and hot-swap on vLLM's multi-LoRA server.

    python manage.py adapters list|promote|rollback|reload --course ID [--adapter-version N]

* `adapter_register` records a finished adapter folder (checksummed) as a candidate version.
* `adapter_promote` writes it to the adapter store under its versioned name (serving.store: once,
  atomically, checksum verified), warms every live replica with a smoke request by that name
  (each resolves it from the store), then switches the course's active version in one
  transaction: new requests use it at once, requests in flight finish on the version they
  started with. A replica started later resolves it on its first request. The previous version
  stays loaded for an instant rollback; the one before is unloaded from every replica after
  ADAPTER_RETIRE_GRACE_SECONDS (by default MODEL_REPLY_TIMEOUT_SECONDS: no reply can still be
  running on it by then).
* `adapter_rollback` makes the previous version active again or, when the active version is the
  course's first (no previous one), retires it so the base model serves the course again; the
  rolled-back version is unloaded after the grace period either way.
* `adapter_reject` retires a candidate that will never serve.
* `adapters_retire` unloads retired versions from every replica once the grace period is over
  (the `serving.tasks.adapters_unload` task, enqueued by name when a switch commits).
* `adapters_publish` (`adapters reload`) stores every active and previous version the store lacks
  (one promoted before it existed) and warms them on every replica.

Every request to vLLM goes through serving.client (warm, unload, smoke, and `adapters_reload`
after a replica restarted); this module decides which version serves which course.
"""

from __future__ import annotations

import logging
from pathlib import Path

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from serving.client import AdapterError, adapter_unload_everywhere, adapter_warm, adapters_reload
from serving.metrics import ADAPTER_SWITCHES, ADAPTER_UNLOADS
from serving.models import ADAPTER_FILES, AdapterVersion, adapter_checksum
from serving.selectors import adapter_rollback_target
from serving.store import StoreError, adapter_store_write

logger = logging.getLogger(__name__)
Status = AdapterVersion.Status
UNLOAD_TASK = "serving.tasks.adapters_unload"


@transaction.atomic
def adapter_register(*, course_id: int, path: Path, base_model: str, metrics: dict | None = None) -> AdapterVersion:
    path = Path(path)
    missing = [name for name in ADAPTER_FILES if not (path / name).exists()]
    if missing:
        raise AdapterError(f"{path} is not a complete adapter (missing {', '.join(missing)}).")
    latest = (
        AdapterVersion.objects.select_for_update().filter(course_id=course_id).aggregate(Max("version"))["version__max"]
    )
    version = (latest or 0) + 1
    return AdapterVersion.objects.create(
        course_id=course_id,
        version=version,
        name=f"course-{course_id}-v{version}",
        base_model=base_model,
        path=str(path),
        sha256=adapter_checksum(path),
        metrics=metrics or {},
    )


def _retire_later(names: list[str]) -> None:
    """Unloads versions nobody is routed to any more, once any reply still running on them is over
    (a Celery task with a countdown, so it survives the process that promoted; sent by name, as
    the registry sits below its tasks). Called on commit with `robust=True`: a broker that is
    down leaves them loaded (logged), not the switch undone."""
    if names:
        current_app.send_task(UNLOAD_TASK, args=[names], countdown=settings.ADAPTER_RETIRE_GRACE_SECONDS)


def adapter_store(*, adapter: AdapterVersion) -> AdapterVersion:
    """Makes sure the adapter store holds `adapter` under its name (written once, checked) and
    records the store copy's checksum; a different copy already there is refused."""
    try:
        stored = adapter_store_write(
            name=adapter.name, source=Path(adapter.path), sha256=adapter.sha256, stored_sha256=adapter.stored_sha256
        )
    except StoreError as exc:
        raise AdapterError(str(exc)) from exc
    if stored != adapter.stored_sha256:
        AdapterVersion.objects.filter(pk=adapter.pk).update(stored_sha256=stored)
        adapter.stored_sha256 = stored
    return adapter


def adapter_promote(*, adapter: AdapterVersion) -> AdapterVersion:
    """Stores, warms on every live replica and activates `adapter` for its course."""
    if AdapterVersion.objects.filter(pk=adapter.pk, status=Status.REJECTED).exists():
        raise AdapterError(f"{adapter.name} was rejected; train a new version instead.")
    adapter_store(adapter=adapter)
    adapter_warm(name=adapter.name)
    with transaction.atomic():
        current = list(
            AdapterVersion.objects.select_for_update().filter(
                course_id=adapter.course_id, status__in=AdapterVersion.KEPT_LOADED
            )
        )
        retired = [a for a in current if a.status == Status.PREVIOUS and a.pk != adapter.pk]
        AdapterVersion.objects.filter(pk__in=[a.pk for a in retired]).update(status=Status.RETIRED)
        AdapterVersion.objects.filter(
            pk__in=[a.pk for a in current if a.status == Status.ACTIVE and a.pk != adapter.pk]
        ).update(status=Status.PREVIOUS)
        AdapterVersion.objects.filter(pk=adapter.pk).update(status=Status.ACTIVE, activated_at=timezone.now())
        transaction.on_commit(lambda: _retire_later([a.name for a in retired]), robust=True)
    adapter.refresh_from_db()
    ADAPTER_SWITCHES.labels(kind="promotion").inc()
    logger.info("course %s now served by %s", adapter.course_id, adapter.name)
    return adapter


def adapter_reject(*, adapter_id: int) -> bool:
    """A candidate that will never serve (an admin said no, or its job failed after training):
    marked rejected and unloaded, if evaluation had loaded it, after the grace period."""
    rejected = AdapterVersion.objects.filter(pk=adapter_id, status=Status.CANDIDATE).update(status=Status.REJECTED)
    if rejected:
        name = AdapterVersion.objects.values_list("name", flat=True).get(pk=adapter_id)
        transaction.on_commit(lambda: _retire_later([name]), robust=True)
    return bool(rejected)


def adapter_rollback(*, course_id: int, active_id: int | None = None) -> AdapterVersion | None:
    """Takes the course's active adapter out of service: the previous version serves again, or the
    base model when there is none (the course's first adapter). The rolled-back version is retired
    and unloaded after the grace period; `adapters promote --adapter-version N` can bring it back.
    Returns what serves the course now: a version, or None for the base model.

    `active_id`, when given, is the version the caller saw active (the admin page's button): if
    another one serves by now, nothing is done, so a button pressed twice rolls back once."""
    target = adapter_rollback_target(course_id=course_id)
    if target is not None:
        # Before the switch: a failed warm leaves the course as it was.
        adapter_store(adapter=target)
        adapter_warm(name=target.name)
    with transaction.atomic():
        active = list(AdapterVersion.objects.select_for_update().filter(course_id=course_id, status=Status.ACTIVE))
        if not active:
            raise AdapterError("This course has no adapter in service: the base model serves it already.")
        if active_id is not None and active[0].pk != active_id:
            raise AdapterError(f"{active[0].name} serves the course by now; nothing was rolled back.")
        # Read again under the active row's lock, which a promotion takes too.
        now_target = adapter_rollback_target(course_id=course_id)
        if getattr(now_target, "pk", None) != getattr(target, "pk", None):
            raise AdapterError("The course's adapters changed meanwhile; nothing was rolled back. Try again.")
        AdapterVersion.objects.filter(pk__in=[a.pk for a in active]).update(status=Status.RETIRED)
        if target is not None:
            AdapterVersion.objects.filter(pk=target.pk).update(status=Status.ACTIVE, activated_at=timezone.now())
        transaction.on_commit(lambda: _retire_later([a.name for a in active]), robust=True)
    ADAPTER_SWITCHES.labels(kind="rollback").inc()
    if target is None:
        logger.info("course %s rolled back to the base model", course_id)
        return None
    target.refresh_from_db()
    logger.info("course %s rolled back to %s", course_id, target.name)
    return target


def adapters_retire(*, names: list[str]) -> list[str]:
    """Unloads those of `names` that no course is routed to (a version made active again during
    the grace period is kept) from every replica; returns the ones unloaded. A failed unload, or a
    replica that is down, is logged, not raised: a retired adapter left loaded costs memory, not
    correctness. The store keeps it: promoting it again resolves it from there."""
    unloaded = []
    for adapter in AdapterVersion.objects.filter(name__in=names).exclude(status__in=AdapterVersion.KEPT_LOADED):
        try:
            adapter_unload_everywhere(name=adapter.name)
            unloaded.append(adapter.name)
            ADAPTER_UNLOADS.labels(outcome="unloaded").inc()
        except AdapterError as exc:
            logger.warning("could not unload %s: %s", adapter.name, exc)
            ADAPTER_UNLOADS.labels(outcome="failed").inc()
    return unloaded


def adapters_publish() -> list[str]:
    """Every active and previous version into the store (one promoted before the store existed
    is written now; one there is checked), then warmed on every live replica that lacks it.
    Returns the names warmed. A version whose stored copy is refused (tampered with) is not
    warmed: the others are, then the refusals are raised."""
    refused = {}
    for adapter in AdapterVersion.objects.filter(status__in=AdapterVersion.KEPT_LOADED):
        try:
            adapter_store(adapter=adapter)
        except AdapterError as exc:
            refused[adapter.name] = str(exc)
    try:
        warmed = adapters_reload(skip=set(refused))
    except AdapterError as exc:
        raise AdapterError(" ".join([*refused.values(), str(exc)])) from exc
    if refused:
        raise AdapterError(" ".join(refused.values()))
    return warmed
