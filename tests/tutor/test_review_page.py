"""The teacher's review in headless Chromium (Debian's package, driven by Playwright).

A student chats; a teacher launches from the development LMS, opens the review tab, allows
training, rates the tutor's reply, writes a correction and approves it; the exported dataset
then trains on the correction.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.management import call_command

from training.models import DatasetExport
from tutor.models import Message, ReplyReview, ReviewEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.real_model]

CORRECTION = "A fraction is a part of a whole: 3/4 means three of four equal parts."


def test_teacher_rates_corrects_and_approves_and_the_export_has_the_correction(
    asgi_url,
    browser_page,
    tmp_path,
    demo_model,
):
    page = browser_page
    page.set_viewport_size({"width": 1200, "height": 900})
    page.goto(asgi_url + "/devlms/start/?user=student")
    page.fill("#message-input", "What is a fraction?")
    page.keyboard.press("Enter")
    page.wait_for_selector(".from-tutor .rating", timeout=90_000)  # the reply finished streaming
    reply = Message.objects.get(sender="assistant", status="complete")

    page.goto(asgi_url + "/devlms/start/?user=teacher")
    with page.expect_popup() as popup:
        page.click("#review-link")
    review = popup.value
    review.wait_for_selector("h1:has-text('Review')")
    review.click("[data-testid=allow-training]")
    review.click("text=What is a fraction?")

    form = review.locator(f"#m{reply.id} [data-testid=review-form]")
    form.locator("input[name=helpful][value=yes]").check()
    form.locator("input[name=correct][value=no]").check()
    form.locator("textarea[name=correction]").fill(CORRECTION)
    form.locator("[data-testid=approve]").click()
    review.wait_for_selector(f"#m{reply.id} [data-testid=approved]")
    assert review.locator(f"#m{reply.id} input[name=helpful][value=yes]").is_checked()

    saved = ReplyReview.objects.get(message=reply)
    assert (saved.decision, saved.helpful, saved.correct, saved.correction) == ("approved", True, False, CORRECTION)
    assert ReviewEvent.objects.filter(action="reply_review", message=reply).exists()

    out = tmp_path / "course.jsonl"
    call_command(
        "export_dataset", "--course", str(reply.conversation.course_id), "--out", str(out), "--eval-fraction", "0"
    )
    (line,) = Path(out).read_text().splitlines()
    messages = json.loads(line)["messages"]
    assert messages[-1] == {"role": "assistant", "content": CORRECTION}
    assert DatasetExport.objects.get().examples.get().provenance == [
        {"message_id": reply.id, "source": "teacher_corrected"}
    ]
