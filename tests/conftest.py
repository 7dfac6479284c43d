from __future__ import annotations

import pytest
import requests
from django.core.cache import cache

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
