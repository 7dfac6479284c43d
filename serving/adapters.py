"""Adapter registry and hot-swap on vLLM's multi-LoRA server.

    python manage.py adapters list|promote|rollback --course ID [--adapter-version N]

* `adapter_register` records a finished adapter folder (checksummed) as a candidate version.
* `adapter_promote` loads it into vLLM under its versioned name (`POST /v1/load_lora_adapter`),
  sends it a smoke request, then switches the course's active version in one transaction: new
  requests use it at once, requests in flight finish on the version they started with. The
  previous version stays loaded for an instant rollback; the one before is unloaded after
  ADAPTER_RETIRE_GRACE_SECONDS (by default MODEL_REPLY_TIMEOUT_SECONDS: no reply can still be
  running on it by then).
* `adapter_rollback` makes the previous version active again or, when the active version is the
  course's first (no previous one), retires it so the base model serves the course again; the
  rolled-back version is unloaded after the grace period either way.
* `adapter_reject` retires a candidate that will never serve.
* `adapters_reload` loads every active and previous adapter: at server start, and when vLLM
  answers 404 for an adapter (it restarted), so no course silently falls back to the base.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from serving.models import AdapterVersion

logger = logging.getLogger(__name__)
Status = AdapterVersion.Status
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterError(Exception):
    """A promotion, rollback or load that could not be done; the message says why."""


def adapter_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        digest.update(name.encode())
        digest.update((path / name).read_bytes())
    return digest.hexdigest()


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


# -- talking to vLLM -------------------------------------------------------------------------------


def _post(endpoint: str, body: dict) -> httpx.Response:
    try:
        return httpx.post(
            f"{settings.VLLM_BASE_URL}{endpoint}", json=body, timeout=settings.MODEL_REPLY_TIMEOUT_SECONDS
        )
    except httpx.HTTPError as exc:
        raise AdapterError(f"The model server cannot be reached ({exc.__class__.__name__}).") from exc


def loaded_adapters() -> set[str]:
    try:
        response = httpx.get(f"{settings.VLLM_BASE_URL}/v1/models", timeout=settings.MODEL_CONNECT_TIMEOUT_SECONDS)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise AdapterError(f"The model server cannot be reached ({exc.__class__.__name__}).") from exc
    return {model["id"] for model in response.json()["data"] if model["id"] != settings.MODEL_SERVED_NAME}


def adapter_load(adapter: AdapterVersion) -> None:
    """Loads the adapter into vLLM (a no-op when it is already loaded)."""
    if adapter_checksum(Path(adapter.path)) != adapter.sha256:
        raise AdapterError(f"{adapter.name}'s files changed since it was registered; refusing to load them.")
    response = _post("/v1/load_lora_adapter", {"lora_name": adapter.name, "lora_path": adapter.path})
    if response.status_code == 400 and "already" in response.text.lower():
        return
    if response.status_code != 200:
        raise AdapterError(f"vLLM refused to load {adapter.name}: {response.status_code} {response.text[:300]}")


def adapter_unload(name: str) -> None:
    response = _post("/v1/unload_lora_adapter", {"lora_name": name})
    if response.status_code not in (200, 400, 404):
        raise AdapterError(f"vLLM refused to unload {name}: {response.status_code} {response.text[:300]}")


def _smoke(adapter: AdapterVersion) -> None:
    response = _post(
        "/v1/chat/completions",
        {"model": adapter.name, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2},
    )
    if response.status_code != 200 or response.json().get("model") != adapter.name:
        raise AdapterError(f"{adapter.name} did not answer a smoke request: {response.status_code}")


# -- promotion and rollback ------------------------------------------------------------------------------


def _retire_later(names: list[str]) -> None:
    """Unloads versions nobody is routed to any more, once any reply still running on them is over
    (a Celery task with a countdown, so it survives the process that promoted). Sent with
    `robust=True`: a broker that is down leaves them loaded (logged), not the switch undone."""
    if names:
        from serving.tasks import adapters_unload

        adapters_unload.apply_async(args=[names], countdown=settings.ADAPTER_RETIRE_GRACE_SECONDS)


def adapter_promote(*, adapter: AdapterVersion) -> AdapterVersion:
    """Loads, smoke-tests and activates `adapter` for its course."""
    if AdapterVersion.objects.filter(pk=adapter.pk, status=Status.REJECTED).exists():
        raise AdapterError(f"{adapter.name} was rejected; train a new version instead.")
    adapter_load(adapter)
    _smoke(adapter)
    with transaction.atomic():
        current = list(
            AdapterVersion.objects.select_for_update().filter(
                course_id=adapter.course_id, status__in=[Status.ACTIVE, Status.PREVIOUS]
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


def adapter_rollback_target(*, course_id: int) -> AdapterVersion | None:
    """The version a rollback makes active again; None: the base model (or nothing is active)."""
    return AdapterVersion.objects.filter(course_id=course_id, status=Status.PREVIOUS).order_by("-version").first()


def adapter_rollback(*, course_id: int, active_id: int | None = None) -> AdapterVersion | None:
    """Takes the course's active adapter out of service: the previous version serves again, or the
    base model when there is none (the course's first adapter). The rolled-back version is retired
    and unloaded after the grace period; `adapters promote --adapter-version N` can bring it back.
    Returns what serves the course now: a version, or None for the base model.

    `active_id`, when given, is the version the caller saw active (the admin page's button): if
    another one serves by now, nothing is done, so a button pressed twice rolls back once."""
    target = adapter_rollback_target(course_id=course_id)
    if target is not None:
        adapter_load(target)  # before the switch: a failed load leaves the course as it was
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
    if target is None:
        logger.info("course %s rolled back to the base model", course_id)
        return None
    target.refresh_from_db()
    logger.info("course %s rolled back to %s", course_id, target.name)
    return target


def adapters_reload() -> list[str]:
    """Loads every active and previous adapter that vLLM does not have (after a restart)."""
    wanted = AdapterVersion.objects.filter(status__in=[Status.ACTIVE, Status.PREVIOUS])
    have = loaded_adapters()
    loaded = []
    for adapter in wanted:
        if adapter.name not in have:
            adapter_load(adapter)
            loaded.append(adapter.name)
    if loaded:
        logger.info("loaded %s into the model server", loaded)
    return loaded


def active_adapter_name(*, course_id: int) -> str | None:
    return (
        AdapterVersion.objects.filter(course_id=course_id, status=Status.ACTIVE).values_list("name", flat=True).first()
    )
