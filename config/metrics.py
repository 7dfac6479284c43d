"""GET /metrics: the app's Prometheus metrics (docs/operations.md has the scrape configuration).

    curl -H "Authorization: Bearer $MONITORING_TOKEN" http://127.0.0.1:8000/metrics

Two kinds of metric, each read the way that stays right with several processes:

* Events (chat replies and their latency, errors, adapter loads) are counted where they happen,
  by tutor.metrics and serving.metrics. uvicorn runs several worker processes (WEB_WORKERS), and a
  scrape reaches one of them: with PROMETHEUS_MULTIPROC_DIR set (deploy/start-web.sh and
  start-worker.sh set it), prometheus-client's multiprocess mode keeps each process's values in
  files there and a scrape adds them all up. Without it (the demo's single process) they are the
  process's own.
* States (training jobs by state, adapter versions by status, the last promotion, Celery queue
  lengths) are read from the database and the broker at scrape time by `StateCollector`, so every
  process answers the same and nothing has to be kept in step.

Only callers `monitoring_allowed` accepts may read it (an address in MONITORING_ALLOWED_NETWORKS,
or the MONITORING_TOKEN bearer token); anyone else gets 403.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from collections.abc import Iterator

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from kombu.exceptions import ChannelError
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from config.celery import app
from serving.selectors import adapter_last_activation, adapter_versions_by_status
from training.selectors import training_jobs_by_state

logger = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def monitoring_allowed(request: HttpRequest) -> bool:
    """The caller may read monitoring data: its address is in MONITORING_ALLOWED_NETWORKS, or it
    sends `Authorization: Bearer MONITORING_TOKEN`. Behind a proxy the address is the one uvicorn
    takes from X-Forwarded-For (--proxy-headers, FORWARDED_ALLOW_IPS); see docs/operations.md."""
    token = settings.MONITORING_TOKEN
    sent = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.MONITORING_ALLOWED_NETWORKS)


def celery_queues() -> list[str]:
    """The queues tasks are sent to: the default one and those CELERY_TASK_ROUTES names."""
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values() if "queue" in route}
    return sorted({settings.CELERY_TASK_DEFAULT_QUEUE, *routed})


def queue_lengths() -> dict[str, int]:
    """Messages waiting in each Celery queue, as the broker counts them. Kombu's passive declare
    answers for every transport (Redis: the list's length over its priority lists; RabbitMQ: the
    queue's count; the filesystem: its files); a queue never declared has no messages."""
    lengths = {}
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS)
        for queue in celery_queues():
            channel = connection.channel()
            try:
                lengths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError:
                lengths[queue] = 0
            finally:
                try:
                    channel.close()
                except Exception:  # RabbitMQ closed it already after the passive declare's 404
                    logger.debug("channel already closed", exc_info=True)
    return lengths


class StateCollector(Collector):
    """What the database and the broker say now, read at each scrape."""

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("tutor_training_jobs", "Training jobs in each state.", labels=["state"])
        for state, count in training_jobs_by_state().items():
            jobs.add_metric([state], count)
        yield jobs
        adapters = GaugeMetricFamily("tutor_adapter_versions", "Adapter versions in each status.", labels=["status"])
        for status, count in adapter_versions_by_status().items():
            adapters.add_metric([status], count)
        yield adapters
        last = adapter_last_activation()
        yield GaugeMetricFamily(
            "tutor_adapter_last_activation_timestamp_seconds",
            "When an adapter version last started serving a course (a promotion or a rollback); 0: never.",
            value=last.timestamp() if last else 0,
        )
        broker_up = GaugeMetricFamily("tutor_broker_up", "1 when the Celery broker answered this scrape.")
        depth = GaugeMetricFamily("tutor_celery_queue_length", "Tasks waiting in each Celery queue.", labels=["queue"])
        try:
            lengths = queue_lengths()
        except Exception as exc:  # a broker that is down is a value to report, not a failed scrape
            logger.warning("the broker did not answer the metrics scrape: %s", exc)
            broker_up.add_metric([], 0)
        else:
            broker_up.add_metric([], 1)
            for queue, length in lengths.items():
                depth.add_metric([queue], length)
        yield broker_up
        yield depth


class _ThisProcess(Collector):
    """The default registry's metrics (this process's own) when there is no multiprocess directory."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def metrics_exposition() -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(StateCollector())
    return generate_latest(registry)


def worker_metrics_serve() -> None:
    """A Celery worker's event metrics (adapter loads, switches, unloads its tasks made) on
    WORKER_METRICS_ADDRESS:WORKER_METRICS_PORT, for Prometheus (deploy/prometheus.yml): every
    process of the worker (its pool, a training child) writes to PROMETHEUS_MULTIPROC_DIR, and the
    main process serves the sum. States are the app's /metrics' to report, not repeated here."""
    from prometheus_client import start_http_server

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        raise ImproperlyConfigured(
            "WORKER_METRICS_PORT is set but PROMETHEUS_MULTIPROC_DIR is not: a worker's tasks run in "
            "other processes than the one serving the metrics. deploy/start-worker.sh sets it."
        )
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(settings.WORKER_METRICS_PORT, addr=settings.WORKER_METRICS_ADDRESS, registry=registry)
    logger.info("worker metrics on http://%s:%s/metrics", settings.WORKER_METRICS_ADDRESS, settings.WORKER_METRICS_PORT)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not monitoring_allowed(request):
        return HttpResponse(
            "Metrics are for monitoring: from MONITORING_ALLOWED_NETWORKS or with the MONITORING_TOKEN.\n",
            status=403,
            content_type="text/plain",
        )
    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE)
