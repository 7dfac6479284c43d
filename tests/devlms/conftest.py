"""Headless Chromium (Debian's package, driven by Playwright) on the development LMS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connections

CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


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
def screenshots(tmp_path) -> Path:
    """Where the tests' screenshots go: SCREENSHOT_DIR when set (to look at them), else tmp."""
    folder = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
