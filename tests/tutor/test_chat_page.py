"""The student's chat page as a student uses it: launched from the development LMS in its iframe,
in Chromium (Debian's package, driven by Playwright), on the app under uvicorn with the real model.

One walk through every control: the first screen (greeting, examples, the demo note, what is
stored and the training choice), an empty and an over-long message, a conversation started by
its first message, ratings, Markdown and maths, a failed and a cut-short reply after a reload
with Retry, rename, delete, a long title at a phone's width. At both widths nothing overflows,
screenshots are written and axe-core finds no serious or critical violation.
"""

from __future__ import annotations

import pytest

from tests.support.screens import DESKTOP, PHONE, lms_launch, screen_check
from tutor.models import Conversation, Course, ErasureRecord, Membership, Message, MessageStatus, TutorSettings

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.real_model]

ACCENT = "rgb(43, 108, 176)"  # --accent: a pressed rating is filled with it
LONG_TITLE = "Fractions, decimals and percentages: converting between all three " * 2


def wait_for_replies(frame, count: int) -> None:
    """Until the conversation shows `count` finished tutor replies (each gets its rating buttons)."""
    frame.locator(".from-tutor .rating").nth(count - 1).wait_for(timeout=90_000)


def test_a_student_walks_through_the_chat(asgi_url, devlms_page):
    page = devlms_page(asgi_url)
    frame = lms_launch(page, asgi_url, user="student")

    # The first screen: a greeting and example questions (defaults), the demo note, the data notice.
    assert "Hi! I'm the tutor for" in frame.locator("#empty-state .greeting").inner_text()
    assert frame.locator("#empty-state button.example").count() == 3
    assert frame.locator('[data-testid="demo-notice"]').is_visible()
    assert "tiny demonstration model" in frame.locator('[data-testid="demo-notice"]').inner_text()
    assert "often wrong" in frame.locator('[data-testid="demo-notice"]').inner_text()
    assert "have not turned training on" in frame.locator("#training-state").inner_text()
    assert frame.locator("#training-opt-in").is_visible() and frame.locator("#training-opt-in").is_checked()
    frame.locator("#stored-details summary").click()
    assert "they see your name" in frame.locator("#stored-details").inner_text()
    frame.locator("#training-opt-in").uncheck()
    frame.locator("#training-status", has_text="will not be used").wait_for()
    assert Membership.objects.get(role="student").training_opt_out is True
    frame.locator("#training-opt-in").check()
    frame.locator("#training-status", has_text="may improve").wait_for()

    # The course's own greeting and examples, as its teachers set them.
    TutorSettings.objects.update_or_create(
        course=Course.objects.get(),
        defaults={"greeting": "Welcome to Year 8 maths!", "example_questions": ["What is 3/4 as a percentage?"]},
    )
    frame = lms_launch(page, asgi_url, user="student")
    assert frame.locator("#empty-state .greeting").inner_text() == "Welcome to Year 8 maths!"
    assert frame.locator("#empty-state button.example").all_inner_texts() == ["What is 3/4 as a percentage?"]
    screen_check(page, frame, "chat-empty")

    # An empty message gets a word; a pasted 5,000-character one is kept whole, counted, and refused
    # by the server in its own words. Neither stores anything.
    box = frame.locator("#message-input")
    box.fill("   ")
    box.press("Enter")
    frame.locator("#chat-status", has_text="the message is empty").wait_for()
    box.fill("x" * 5000)
    assert len(box.input_value()) == 5000
    assert frame.locator("#message-count").inner_text() == "5000 / 4000 characters: 1000 over the limit"
    frame.locator("#send").click()
    frame.locator("#chat-status", has_text="Your message is 5000 characters long; the limit is 4000").wait_for()
    assert len(box.input_value()) == 5000 and frame.locator(".from-student").count() == 0
    frame.get_by_role("button", name="New conversation").click()
    assert not Conversation.objects.exists()

    # An example question starts the conversation: stored with its first message, answered.
    frame.get_by_role("button", name="What is 3/4 as a percentage?").click()
    assert box.input_value() == "What is 3/4 as a percentage?"
    box.press("Enter")  # the keyboard alone sends
    wait_for_replies(frame, 1)
    assert frame.locator("#empty-state").is_hidden()
    conversation = Conversation.objects.get()
    reply = conversation.messages.get(sender="assistant")
    assert reply.status == "complete" and reply.content.strip()[:10] in frame.locator(".from-tutor .body").inner_text()
    assert frame.locator("#message-count").inner_text() == "0 / 4000 characters"

    # Ratings are drawn icons (no emoji font needed) with a filled pressed state.
    helpful = frame.get_by_role("button", name="Helpful", exact=True)
    assert helpful.locator("svg").count() == 1 and helpful.inner_text().strip() == ""
    helpful.click()
    frame.locator('.rating button[aria-label="Helpful"][aria-pressed="true"]').wait_for()
    assert helpful.evaluate("b => getComputedStyle(b).backgroundColor") == ACCENT
    assert (
        frame.get_by_role("button", name="Not helpful").evaluate("b => getComputedStyle(b).backgroundColor") != ACCENT
    )
    assert Message.objects.get(pk=reply.pk).student_rating == 1

    # After a reload: Markdown and maths render, a failed reply says so, and Retry answers it.
    Message.objects.create(
        conversation=conversation,
        sender="assistant",
        content="**Half** plus a quarter, <PERSON>: $\\frac{1}{2}+\\frac{1}{4}=\\frac{3}{4}$",
    )
    Message.objects.create(conversation=conversation, sender="user", content="And 1/8?", content_scrubbed="And 1/8?")
    Message.objects.create(
        conversation=conversation, sender="assistant", content="", status=MessageStatus.FAILED, error_code="x"
    )
    frame = lms_launch(page, asgi_url, user="student")
    formatted = frame.locator(".from-tutor").nth(1)
    formatted.locator("strong").wait_for()
    assert formatted.locator("strong").inner_text() == "Half" and formatted.locator(".katex").count() == 1
    assert "a quarter, <PERSON>:" in formatted.inner_text()  # a scrubber placeholder is text, not a tag
    failed = frame.locator(".from-tutor.unfinished")
    assert "could not answer" in failed.inner_text()
    screen_check(page, frame, "chat-failed-reply")
    failed.get_by_role("button", name="Retry").click()
    wait_for_replies(frame, 3)  # the first, the Markdown one, the retried one
    assert frame.locator(".unfinished").count() == 0
    assert conversation.messages.filter(sender="assistant", status="complete").count() == 3

    # A reply cut short (the student left mid-reply) is shown as such, with Retry, after a reload.
    Message.objects.create(conversation=conversation, sender="user", content="And 1/16?", content_scrubbed="And 1/16?")
    Message.objects.create(
        conversation=conversation, sender="assistant", content="One sixteenth is", status=MessageStatus.INTERRUPTED
    )
    frame = lms_launch(page, asgi_url, user="student")
    cut = frame.locator(".from-tutor.unfinished")
    cut.wait_for()
    assert "One sixteenth is" in cut.inner_text() and "cut short" in cut.inner_text()
    cut.get_by_role("button", name="Retry").click()
    wait_for_replies(frame, 4)
    assert frame.locator(".unfinished").count() == 0
    assert conversation.messages.filter(sender="assistant", status="complete").count() == 4

    # Rename it with a long title: at a phone's width nothing overflows, the sidebar's buttons take
    # taps, and the message box stays on screen below the conversation.
    frame.get_by_role("button", name="Rename").click()
    frame.get_by_label("New title").fill(LONG_TITLE)
    frame.get_by_role("button", name="Save the title").click()
    frame.locator("#chat-status", has_text="Renamed.").wait_for()
    assert Conversation.objects.get().title == LONG_TITLE.strip()
    assert frame.locator("#conversation-title").inner_text() == LONG_TITLE.strip()
    screen_check(page, frame, "chat-conversation", widths=(DESKTOP, PHONE))
    frame.evaluate("window.scrollTo(0, 0)")  # as the launch leaves it: no scrolling to find the box
    on_screen = "e => e.getBoundingClientRect().bottom <= window.innerHeight"
    assert frame.locator("#message-input").evaluate(on_screen), "on a phone the message box is below the frame's fold"
    frame.locator("#conversations-panel summary").click()
    frame.locator("#conversation-list button").first.click()  # fails if anything intercepts the tap
    frame.locator("#conversation-list button[aria-current='true']").wait_for(state="attached")
    page.set_viewport_size(DESKTOP)

    # "New conversation" stores nothing; Delete asks first, then erases the conversation.
    frame.get_by_role("button", name="New conversation").click()
    assert frame.locator("#empty-state").is_visible() and Conversation.objects.count() == 1
    frame.locator("#conversation-list button").first.click()
    frame.locator("#conversation-actions").get_by_role("button", name="Delete").click()
    frame.get_by_role("button", name="Keep it").click()
    assert Conversation.objects.count() == 1
    frame.locator("#conversation-actions").get_by_role("button", name="Delete").click()
    frame.get_by_role("button", name="Delete it").click()
    frame.locator("#chat-status", has_text="The conversation was deleted.").wait_for()
    assert not Conversation.objects.exists() and not Message.objects.exists()
    assert ErasureRecord.objects.get().requested_via == "student_delete"
    assert frame.locator("#conversation-list button").count() == 0 and frame.locator("#empty-state").is_visible()
