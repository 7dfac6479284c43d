"""Alerts a teacher will see, in Chromium (Debian's package, driven by Playwright) on the app under
uvicorn, launched from the development LMS.

A teacher sets the course's alert address in the safety queue; a student tells the tutor they want to hurt themselves;
the teacher's next launch shows the banner; the email is in the outbox; the teacher acknowledges
and resolves the flag with notes in the safety queue, and the open-flags counter goes down. The
screened message is answered without the model, so no model server runs here.
"""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from tests.support.db import database_url_for_tests
from tests.support.screens import DESKTOP, PHONE
from tests.tutor.test_alerts import SELF_HARM
from tutor.models import Flag, FlagAction, FlagAlert

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

ALERT_ADDRESS = "safeguarding@school.example"


@pytest.fixture(scope="module")
def app_url(django_db_setup):
    """The app under uvicorn on the test database, with no model server (nothing listens on port 9)."""
    from tests.support.servers import asgi_app

    with asgi_app(
        vllm_url="http://127.0.0.1:9", database_url=database_url_for_tests(), redis_url=django_settings.REDIS_URL
    ) as url:
        yield url


@pytest.fixture
def lms(app_url, chromium, settings):
    from django.core.management import call_command

    settings.PUBLIC_BASE_URL = app_url  # the dev LMS registers itself under the app's URL
    call_command("devlms_setup", stdout=None)
    page = chromium.new_page(viewport=DESKTOP)
    page.set_default_timeout(30_000)
    yield page
    page.close()


def launch_in_frame(page, base: str, user: str):
    page.goto(base + "/devlms/")
    page.get_by_role("link", name=f"Launch as {user}").first.click()
    frame = page.frame_locator('iframe[name="tool"]')
    frame.locator(f'[data-testid="role"]:text-is("{user}")').wait_for()
    return frame


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth + 1")


def test_a_self_harm_message_reaches_the_teacher_by_banner_and_email_and_is_resolved_in_the_queue(
    app_url,
    lms,
    screenshots,
):
    page = lms
    # The teacher sets where the course's safety alerts go: in the review tab, the safety queue.
    frame = launch_in_frame(page, app_url, "teacher")
    assert frame.locator('[data-testid="safety-banner"]').count() == 0
    with page.expect_popup() as popup:
        frame.get_by_role("button", name="Review conversations").click()
    review = popup.value
    review.get_by_role("link", name="open flags: the safety queue").click()
    review.get_by_label("This course's alert addresses").fill(ALERT_ADDRESS)
    assert review.get_by_label("This course's escalation addresses").is_disabled()  # administrators set those
    review.get_by_role("button", name="Save the addresses").click()
    review.locator('[data-testid="notice"]', has_text="Alert addresses saved.").wait_for()
    review.close()

    # The student says it.
    frame = launch_in_frame(page, app_url, "student")
    frame.locator("#message-input").fill(SELF_HARM)
    frame.locator("#message-input").press("Enter")
    frame.locator(".from-tutor .body", has_text="talk to someone you trust").wait_for(timeout=90_000)
    assert frame.locator('[data-testid="safety-banner"]').count() == 0  # never on a student's page
    flag = Flag.objects.get()
    assert flag.urgent and flag.category == "self_harm"

    # The teacher's next launch shows the banner.
    frame = launch_in_frame(page, app_url, "teacher")
    banner = frame.locator('[data-testid="safety-banner"]')
    banner.wait_for()
    assert "1 urgent flag in this course needs a teacher" in banner.inner_text()
    assert "Possible self-harm" in banner.inner_text() and "not acknowledged yet" in banner.inner_text()
    page.screenshot(path=screenshots / "alerts-banner-1280x800.png")
    page.set_viewport_size(PHONE)
    banner.scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "alerts-banner-390x844.png")
    assert no_sideways_scroll(page) and page.frame(name="tool").evaluate(
        "document.scrollingElement.scrollWidth <= window.innerWidth + 1"
    )
    page.set_viewport_size(DESKTOP)
    assert FlagAlert.objects.filter(flag=flag, kind="banner").count() == 1

    # The email is in the outbox: the scrubbed excerpt and a link, no name, no phone number.
    page.goto(app_url + "/devlms/outbox/")
    email = page.locator('[data-testid="email"]').first
    assert email.locator('[data-testid="email-to"]').inner_text() == ALERT_ADDRESS
    assert "Urgent: possible self-harm" in email.locator('[data-testid="email-subject"]').inner_text()
    body = email.locator('[data-testid="email-body"]').inner_text()
    assert flag.message.content_scrubbed in body and f"/review/{flag.course_id}/flags/" in body
    assert "Ada" not in body and "07700" not in body
    page.screenshot(path=screenshots / "alerts-outbox-1280x800.png")

    # The banner's button opens the safety queue in a new tab.
    frame = launch_in_frame(page, app_url, "teacher")
    with page.expect_popup() as popup:
        frame.get_by_role("button", name="Open the safety queue").click()
    queue = popup.value
    queue.set_default_timeout(30_000)
    card = queue.locator(f"#flag-{flag.id}")
    card.wait_for()
    assert card.locator('[data-testid="flag-text"]').inner_text() == flag.message.content_scrubbed
    assert card.locator('[data-testid="flag-state"]').inner_text() == "open"
    queue.get_by_role("link", name="overview and conversations").click()
    assert queue.locator('[data-testid="open-flags"]').inner_text() == "1"
    queue.get_by_role("link", name="open flags: the safety queue").click()

    card.get_by_label("Note").fill("Spoke with Ada Student at break; counsellor informed.")
    card.get_by_role("button", name="Acknowledge").click()
    queue.locator('[data-testid="notice"]', has_text="acknowledged").wait_for()
    assert card.locator('[data-testid="flag-state"]').inner_text() == "acknowledged"
    assert "Acknowledged by Tom Teacher" in card.locator('[data-testid="flag-history"]').inner_text()
    queue.set_viewport_size(DESKTOP)
    queue.screenshot(path=screenshots / "alerts-queue-1280x800.png", full_page=True)
    queue.set_viewport_size(PHONE)
    queue.screenshot(path=screenshots / "alerts-queue-390x844.png", full_page=True)
    assert no_sideways_scroll(queue)
    queue.set_viewport_size(DESKTOP)

    card.get_by_label("Note").fill("Counsellor met her today; plan agreed with her family.")
    card.get_by_role("button", name="Resolve").click()
    queue.locator('[data-testid="notice"]', has_text="resolved").wait_for()
    assert queue.locator(f"#flag-{flag.id}").count() == 0  # the default view lists unresolved flags
    queue.get_by_role("link", name="overview and conversations").click()
    assert queue.locator('[data-testid="open-flags"]').inner_text() == "0"  # the counter went down

    flag.refresh_from_db()
    assert flag.state == "resolved"
    notes = [action.note for action in FlagAction.objects.filter(flag=flag)]
    assert notes == [
        "Spoke with <PERSON> at break; counsellor informed.",
        "Counsellor met her today; plan agreed with her family.",
    ]
    frame = launch_in_frame(page, app_url, "teacher")
    frame.locator("#tutor-settings").wait_for()
    assert frame.locator('[data-testid="safety-banner"]').count() == 0  # resolved: no more banner
