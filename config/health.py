"""GET /health/: is the tutor working, part by part (docs/operations.md).

    curl -s http://127.0.0.1:8000/health/ | python -m json.tool

/healthz stays the cheap liveness probe (it answers "ok" while the process serves). /health/
checks what the tutor needs, each part with `ok` or `error` and, on error, a reason in plain words:

* app: this process answers (always ok when there is an answer at all);
* database: a query runs;
* broker: Celery's broker accepts a connection;
* workers: Celery workers answer a ping (`inspect active_queues`, which also says the queues each
  one consumes), and every queue tasks are sent to has one;
* replicas: each model server of VLLM_REPLICA_URLS (else VLLM_BASE_URL), asked directly (serving.client.replica_health).

200 when the app and the database work (the tutor can take messages; a dead replica or worker
degrades it, and `status` says `degraded`), 503 otherwise. The parts' details (host names, URLs,
reasons) go only to callers config.metrics.monitoring_allowed accepts; others get the status alone.
The checks run side by side, each within HEALTH_CHECK_TIMEOUT_SECONDS (one that takes much
longer is reported as an error, not waited for).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.celery import app
from config.metrics import celery_queues, monitoring_allowed
from serving.client import replica_health, replica_urls


def _ok(**details) -> dict:
    return {"status": "ok", **details}


def _error(reason: str, **details) -> dict:
    return {"status": "error", "reason": reason, **details}


def _plain(exc: Exception) -> str:
    """An exception in a few words, without anything a URL may hold (a password)."""
    text = str(exc).split("\n")[0][:200]
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def database_check() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return _error(f"the database did not answer a query ({_plain(exc)})")
    return _ok()


def broker_check() -> dict:
    try:
        with app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, interval_start=0, timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS)
            broker.default_channel  # noqa: B018 (opening a channel is what proves the broker answers)
            transport = broker.transport_cls
    except Exception as exc:
        return _error(f"the Celery broker cannot be reached ({_plain(exc)})")
    return _ok(transport=str(transport))


def workers_check() -> dict:
    try:
        answered = app.control.inspect(timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS).active_queues() or {}
    except Exception as exc:
        return _error(f"the workers could not be asked (the broker: {_plain(exc)})")
    workers = {name: sorted(queue["name"] for queue in queues) for name, queues in sorted(answered.items())}
    queues = {queue: [name for name, consumed in workers.items() if queue in consumed] for queue in celery_queues()}
    if not workers:
        return _error(
            f"no Celery worker answered a ping within {settings.HEALTH_CHECK_TIMEOUT_SECONDS:g} s",
            workers=workers,
            queues=queues,
        )
    idle = [queue for queue, names in queues.items() if not names]
    if idle:
        return _error(f"no worker consumes the {', '.join(idle)} queue", workers=workers, queues=queues)
    return _ok(workers=workers, queues=queues)


def replica_check(url: str) -> dict:
    health = replica_health(url=url, timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS)
    if not health.ok:
        return _error(health.reason)
    return _ok(adapters=list(health.adapters))


def _within(future: Future, deadline: float) -> dict:
    """A check's result, or an error once the deadline passed (a broker that retries its
    connection can take longer than its timeout; the check is left to finish on its own)."""
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        return _error(f"no answer within {settings.HEALTH_CHECK_TIMEOUT_SECONDS:g} s")


def health_report() -> tuple[bool, dict]:
    """(whether the app can take messages, every part's state)."""
    started = time.monotonic()
    urls = replica_urls()
    pool = ThreadPoolExecutor(max_workers=2 + len(urls), thread_name_prefix="health")
    try:
        broker = pool.submit(broker_check)
        workers = pool.submit(workers_check)
        replicas = {url: pool.submit(replica_check, url) for url in urls}
        database = database_check()  # here: Django's connections belong to their thread
        # Room for the workers' ping, which takes its whole timeout, and the answer's way back.
        deadline = started + 2 * settings.HEALTH_CHECK_TIMEOUT_SECONDS + 1
        components = {
            "app": _ok(),
            "database": database,
            "broker": _within(broker, deadline),
            "workers": _within(workers, deadline),
            "replicas": {url: _within(future, deadline) for url, future in replicas.items()},
        }
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    serving = database["status"] == "ok"
    parts = [components["broker"], components["workers"], *components["replicas"].values()]
    everything = serving and all(part["status"] == "ok" for part in parts)
    status = "ok" if everything else "degraded" if serving else "error"
    return serving, {"status": status, "seconds": round(time.monotonic() - started, 3), "components": components}


@never_cache
@require_GET
def health_view(request: HttpRequest) -> JsonResponse:
    serving, report = health_report()
    if not monitoring_allowed(request):
        report = {"status": report["status"]}
    return JsonResponse(report, status=200 if serving else 503)
