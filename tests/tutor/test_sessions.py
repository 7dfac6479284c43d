"""The launch session and the launch token: the session ends with the token, and the token never
travels in a URL, so no access log keeps it."""

from __future__ import annotations

import re
import time

import pytest
import requests
from django.core.management import call_command

from devlms.platform import USERS
from tests.support.db import database_url_for_tests
from tests.support.review import review_enter
from tests.support.servers import asgi_app_logged
from tutor.models import Course

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

CHROMIUM = "/usr/bin/chromium"


def token_of(page_html: str) -> str:
    return re.search(r'name="launch-token" content="([^"]+)"', page_html).group(1)


def pieces(token: str) -> list[str]:
    """A signed token's payload and signature: found in a log however its colons were encoded."""
    payload, _timestamp, signature = token.split(":")
    return [payload, signature]


def test_the_launch_session_ends_with_the_launch_token(tool, platform, settings):
    settings.LAUNCH_TOKEN_MAX_AGE = 8
    browser = requests.Session()
    launched = platform.launch(browser, tool, user="teacher")
    launched_at = time.time()
    assert launched.status_code == 200
    (cookie,) = [c for c in browser.cookies if c.name == "sessionid"]
    assert cookie.expires <= launched_at + 8 + 1  # not the 14 days of SESSION_COOKIE_AGE
    assert browser.get(tool + "/api/v1/me/").status_code == 200

    time.sleep(max(0.0, launched_at + 3 - time.time()))
    # The review tab, entered 3 s into the launch, ends with the launch too, not 8 s later.
    course_id = Course.objects.get().id
    assert review_enter(browser, tool, token_of(launched.text)).url.endswith(f"/review/{course_id}/")
    session = browser.cookies["sessionid"]
    assert browser.get(f"{tool}/review/{course_id}/").status_code == 200

    time.sleep(max(0.0, launched_at + 8.5 - time.time()))
    # A client that ignores the cookie's expiry (or holds a copy of it) is refused all the same.
    api = requests.get(tool + "/api/v1/me/", cookies={"sessionid": session})
    review = requests.get(f"{tool}/review/{course_id}/", cookies={"sessionid": session})
    assert api.status_code == 401 and api.json()["error"]["code"] in {"launch_token_expired", "not_launched"}
    assert review.status_code == 401 and "Open the tutor" in review.text


def test_the_review_opens_only_from_the_tutors_own_page(tool, platform):
    token = token_of(platform.launch(requests.Session(), tool, user="teacher").text)
    course_id = Course.objects.get().id
    for headers in ({"Origin": "https://attacker.example"}, {}):
        elsewhere = requests.Session()
        refused = elsewhere.post(tool + "/review/enter/", data={"t": token}, headers=headers)
        assert refused.status_code == 403 and "review_entry_refused" in refused.text
        assert elsewhere.get(f"{tool}/review/{course_id}/").status_code == 401


@pytest.fixture
def logged_app(transactional_db, settings, monkeypatch):
    """The app under uvicorn at its default log level, with the development LMS registered."""
    # Playwright's sync API runs an event loop in this thread; the ORM calls in between block.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # The review pages need no model server (nothing listens on port 9).
    with asgi_app_logged(
        vllm_url="http://127.0.0.1:9", database_url=database_url_for_tests(), redis_url=settings.REDIS_URL
    ) as (base, log):
        settings.PUBLIC_BASE_URL = base
        call_command("devlms_setup")
        yield base, log


def test_no_launch_token_reaches_the_access_log_when_a_teacher_opens_the_review(logged_app):
    from playwright.sync_api import sync_playwright

    base, log = logged_app
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(base + "/devlms/start/?user=teacher")
        token = page.get_attribute('meta[name="launch-token"]', "content")
        with page.expect_popup() as popup:
            page.click("#review-link")
        review = popup.value
        review.wait_for_selector("h1:has-text('Review')")
        assert "/review/" in review.url and "t=" not in review.url
        browser.close()

    access_log = log.read_text()
    assert not [piece for piece in pieces(token) if piece in access_log]
    assert '"POST /review/enter/ HTTP/1.1" 302' in access_log  # the access log is on, and saw the entry
    assert USERS["teacher"].sub not in access_log  # the login's login_hint (an LMS user id) neither

    # An old page's link, with the token in its URL: refused with a page that says what to do,
    # and its token is kept out of the log all the same.
    old_link = requests.Session()
    refused = old_link.get(base + "/review/enter/", params={"t": token})
    assert refused.status_code == 400 and "out of date" in refused.text and "Review conversations" in refused.text
    assert old_link.get(base + f"/review/{Course.objects.get().id}/").status_code == 401
    # LTI Dynamic Registration puts the platform's registration token in the URL (the spec's choice).
    requests.get(
        base + "/lti/register/",
        params={"openid_configuration": base + "/nowhere", "registration_token": "reg-secret-77"},
    )
    time.sleep(0.5)
    access_log = log.read_text()
    assert "/review/enter/?t=[redacted]" in access_log
    assert not [piece for piece in pieces(token) if piece in access_log]
    assert "reg-secret-77" not in access_log
