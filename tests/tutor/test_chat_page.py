"""The chat page in headless Chromium (Debian's package, driven by Playwright), on the ASGI app.

A student launches from the development LMS, sends with the keyboard alone, sees the reply
stream in, rates it; Markdown and maths render; the page fits a phone's width.
"""

from __future__ import annotations

import pytest

from tutor.models import Conversation, Message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.real_model]

CONSOLE: list[str] = []


def test_student_chats_with_the_keyboard_and_sees_markdown_and_maths(asgi_url, browser_page):
    page = browser_page
    page.on("console", lambda message: CONSOLE.append(message.text))
    page.on("pageerror", lambda error: CONSOLE.append(str(error)))
    page.goto(asgi_url + "/devlms/start/?user=student")
    page.wait_for_selector('[data-testid="role"]:has-text("student")')

    page.focus("#message-input")
    page.keyboard.type("Hello! What is a fraction?")
    page.keyboard.press("Enter")  # Enter sends; no mouse needed

    try:
        page.wait_for_selector(".from-tutor .rating", timeout=60_000)  # the reply finished streaming
    except Exception:
        print("STATUS:", page.inner_text("#chat-status"), "\nMESSAGES:", page.inner_html("#messages"), CONSOLE)
        raise
    reply_text = page.inner_text(".from-tutor .body")
    assert reply_text.strip()
    conversation = Conversation.objects.get()
    stored = conversation.messages.get(sender="assistant")
    assert stored.status == "complete" and stored.content.strip()[:10] in reply_text
    assert page.inner_text(".from-student .body") == "Hello! What is a fraction?"

    page.click('.from-tutor .rating button[aria-label="Helpful"]')
    page.wait_for_selector('.from-tutor .rating button[aria-label="Helpful"][aria-pressed="true"]')
    assert Message.objects.get(pk=stored.pk).student_rating == 1

    # A reply with Markdown and LaTeX, as the tutor is told to write them, renders as such.
    Message.objects.create(
        conversation=conversation,
        sender="assistant",
        content="**Half** plus a quarter: $\\frac{1}{2}+\\frac{1}{4}=\\frac{3}{4}$",
    )
    page.click("#conversation-list button")  # reopen the conversation from the sidebar
    page.wait_for_selector(".from-tutor >> nth=1")
    last = page.locator(".from-tutor").nth(1)
    assert last.locator("strong").inner_text() == "Half"
    assert last.locator(".katex").count() == 1

    # Nothing overflows a phone's width.
    assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth + 1")
