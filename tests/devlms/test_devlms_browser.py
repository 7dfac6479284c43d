"""The development LMS as a person uses it: buttons clicked in Chromium, the tool in the page's iframe."""

from __future__ import annotations

import pytest

from tests.devlms.conftest import DESKTOP, PHONE
from tutor.models import Person, Placement
from tutor.services import pseudonym_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def tool_frame(page):
    return page.frame_locator('iframe[name="tool"]')


def launch_in_frame(page, base: str, button: str, role: str):
    page.goto(base + "/devlms/")
    page.get_by_role("link", name=button).first.click()
    frame = tool_frame(page)
    frame.locator(f'[data-testid="role"]:text-is("{role}")').wait_for()
    return frame


@pytest.mark.real_model
def test_embedded_launch_opens_the_tutor_in_the_frame_and_it_answers(asgi_url, devlms_page, screenshots):
    page = devlms_page(asgi_url)
    frame = launch_in_frame(page, asgi_url, "Launch as student (Ada Student)", "student")

    frame.locator("#message-input").fill("Hello! What is a fraction?")
    frame.locator("#message-input").press("Enter")
    frame.locator(".from-tutor .rating").wait_for(timeout=90_000)  # the reply finished streaming
    assert frame.locator(".from-tutor .body").inner_text().strip()

    page.screenshot(path=screenshots / "devlms-embedded-1280x800.png")
    page.set_viewport_size(PHONE)
    frame.locator("#message-input").scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "devlms-embedded-390x844.png")
    assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth + 1")
    inner = page.frame(name="tool")
    assert inner.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth + 1")
    page.set_viewport_size(DESKTOP)


def test_teacher_places_the_tutor_from_the_frame_and_a_student_launches_it(tool, devlms_page, screenshots):
    page = devlms_page(tool)
    page.goto(tool + "/devlms/")
    page.get_by_role("link", name="Add the tutor as teacher").click()
    frame = tool_frame(page)
    frame.get_by_label("Title students will see").fill("Ratios helper")
    frame.get_by_role("button", name="Add the tutor to the course").click()
    # The tool's response goes back to the dev LMS, read the way Moodle reads it.
    frame.locator('[data-testid="content-item"]').wait_for()
    assert frame.locator('[data-testid="content-item"]').inner_text() == "Ratios helper"
    frame.get_by_role("link", name="Back to the course").click()  # target _top: the whole page

    page.get_by_role("heading", name="Ratios helper").wait_for()
    page.screenshot(path=screenshots / "devlms-placed-1280x800.png")
    card = page.locator(".card", has=page.get_by_role("heading", name="Ratios helper"))
    card.get_by_role("link", name="Launch as student (Ada Student)").click()
    tool_frame(page).locator('[data-testid="role"]:text-is("student")').wait_for()
    assert Placement.objects.filter(title="Ratios helper", lms_resource_link_id="devlms-link-2").exists()


def test_data_privacy_buttons_open_the_privacy_page_and_erasure_needs_a_confirmation(tool, devlms_page, screenshots):
    page = devlms_page(tool)
    launch_in_frame(page, tool, "Launch as student (Ada Student)", "student")  # the tutor now knows Ada
    ada = Person.objects.get(pseudonym=pseudonym_for(issuer=tool + "/devlms", subject="devlms-student-1"))

    page.get_by_role("link", name="My data, as student (Ada Student)").click()
    frame = tool_frame(page)
    frame.get_by_role("button", name="Erase my data").wait_for()
    assert Person.objects.filter(pk=ada.pk).exists()  # nothing happens before the confirmation

    page.get_by_role("link", name="Ada Student's data, as admin").click()
    frame.get_by_role("button", name="Erase their data").click()
    frame.get_by_text("Everything the tutor held about this person has been deleted.").wait_for()
    page.set_viewport_size(PHONE)
    page.screenshot(path=screenshots / "devlms-privacy-390x844.png", full_page=True)
    assert not Person.objects.filter(pk=ada.pk).exists()
