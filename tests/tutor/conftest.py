"""Fixtures of the tutor tests: headless Chromium on the ASGI app."""

from __future__ import annotations

import pytest
from django.core.management import call_command

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser_page(asgi_url, settings, monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the ORM calls the
    # test makes in between are ordinary blocking calls (Django's documented escape hatch).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.PUBLIC_BASE_URL = asgi_url  # the dev LMS registers itself under the ASGI app's URL
    call_command("devlms_setup")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 375, "height": 740})  # a phone
        yield page
        browser.close()
