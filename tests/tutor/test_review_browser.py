"""The teacher's review pages as a teacher uses them, in Chromium: launched from the development
LMS in its iframe, "Review conversations" opens the review in a new tab; at 390 and 1280 px
nothing scrolls sideways and axe-core finds nothing serious, and every control does its job."""

from __future__ import annotations

import csv
import io
import re

import pytest

from tests.support.chat import member
from tests.support.review import stored_exchanges
from tests.support.screens import DESKTOP, lms_launch, screen_check
from tutor.models import Conversation, Membership, ReplyReview, ReviewDecision, ReviewEvent, Role

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

FRACTIONS = [
    {
        "question": "How do I add $\\frac{1}{2}$ and $\\frac{1}{4}$? I'm <PERSON>.",
        "raw_question": "How do I add $\\frac{1}{2}$ and $\\frac{1}{4}$? I'm Ada Quill.",
        "reply": "**Use a common denominator**:\n\n"
        "$$\\frac{1}{2}+\\frac{1}{4}=\\frac{2}{4}+\\frac{1}{4}=\\frac{3}{4}$$\n\n"
        "- rewrite $\\frac{1}{2}$ as $\\frac{2}{4}$\n- add the tops",
    },
    {"question": "And $\\frac{1}{3}+\\frac{1}{6}$?", "reply": "The same way: $\\frac{1}{2}$.", "rating": -1},
]
CORRECTION = "Rewrite both over **6**: $\\frac{2}{6}+\\frac{1}{6}=\\frac{1}{2}$"


def test_teacher_reviews_from_the_lms_search_bulk_csv_preview_shortcuts(tool, devlms_page, settings):
    page = devlms_page(tool)
    frame = lms_launch(page, tool, user="teacher")
    teacher = Membership.objects.get(role=Role.TEACHER)
    course = teacher.course
    ada = member("devlms-student-a", context=course.lms_context_id, issuer=course.lms_issuer, name="Ada Quill")
    bea = member("devlms-student-b", context=course.lms_context_id, issuer=course.lms_issuer, name="Bea Stone")
    fractions = stored_exchanges(ada, FRACTIONS)
    photosynthesis = stored_exchanges(bea, [("What is photosynthesis?", "Plants making sugar from light.")])
    osmosis = stored_exchanges(bea, [("What is osmosis?", "Water crossing a membrane.")])
    later = stored_exchanges(ada, [("What is a prime number?", "A number with exactly two divisors.")])
    for rank, conversation in enumerate((fractions, photosynthesis, osmosis, later)):  # the list's order
        when = conversation.created_at.replace(year=2030 - rank)
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=when)

    with page.expect_popup() as popup:
        frame.get_by_role("button", name="Review conversations").click()
    review = popup.value
    review.set_default_timeout(20_000)
    review.get_by_role("heading", name=re.compile("^Review · ")).wait_for()
    rows = review.locator('[data-testid="conversation-row"]')
    assert rows.count() == 4
    assert "photosynthesis" in review.locator('[data-testid="topics"]').inner_text()
    assert "Ada Quill" in review.locator('[data-testid="students"]').inner_text()
    screen_check(review, None, "review-course")
    review.set_viewport_size(DESKTOP)

    # Search by text, then by student.
    review.locator("input[name=q]").fill("photosynthesis")
    review.get_by_role("button", name="Filter").click()
    review.wait_for_url(re.compile(r"q=photosynthesis"))
    assert rows.count() == 1 and "photosynthesis" in rows.first.inner_text()
    review.locator("input[name=q]").fill("")
    review.locator("select[name=student]").select_option(label=f"Bea Stone #{bea.person.pseudonym[:8]}")
    review.get_by_role("button", name="Filter").click()
    review.wait_for_url(re.compile(r"student="))
    assert rows.count() == 2 and all("Bea Stone" in text for text in rows.all_inner_texts())

    # The CSV of what is shown: scrubbed text, the name as shown, no raw text, no LMS id.
    review.get_by_role("link", name="Clear").click()
    with review.expect_download() as download:
        review.locator('[data-testid="csv"]').click()
    text = open(download.value.path(), encoding="utf-8-sig").read()
    exported = list(csv.DictReader(io.StringIO(text)))
    assert len(exported) == 10 and {row["student"] for row in exported} == {"Ada Quill", "Bea Stone"}
    assert "I'm <PERSON>." in text and "I'm Ada Quill" not in text and "devlms-student" not in text

    # Bulk approve two conversations: their rows change.
    review.locator(f'[data-conversation="{photosynthesis.id}"] input[type=checkbox]').check()
    review.locator(f'[data-conversation="{osmosis.id}"] input[type=checkbox]').check()
    review.locator('[data-testid="bulk-approve"]').click()
    review.locator('[data-testid="notice"]').filter(has_text="Approved 2 undecided replies").wait_for()
    for conversation in (photosynthesis, osmosis):
        row = review.locator(f'[data-conversation="{conversation.id}"]')
        assert "1 approved" in row.inner_text() and row.locator('[data-testid="to-review"]').count() == 0
    assert ReviewEvent.objects.filter(action="reply_review", detail__decision="approved").count() == 2

    # The conversation: rendered as the chat renders it, a page of a sensible height.
    review.locator('[data-testid="start-reviewing"]').click()
    review.wait_for_url(re.compile(f"/conversations/{fractions.id}/"))
    first_reply, second_reply = fractions.messages.filter(sender="assistant").order_by("id")
    reply_box = review.locator(f"#m{first_reply.id} .md")
    reply_box.locator(".katex-display").wait_for()
    assert reply_box.locator("strong").inner_text() == "Use a common denominator"
    assert reply_box.locator("li").count() == 2
    question = review.locator('[data-testid="message-user"]').first
    assert "<PERSON>" in question.inner_text()
    # The student's maths renders too, in their message and in the title; their text stays as typed.
    assert question.locator(".katex").count() == 2 and review.locator("h1 .katex").count() == 2
    height = review.evaluate("document.scrollingElement.scrollHeight")
    assert height < 2000, f"4 messages make a {height} px page"

    # The correction's live preview renders Markdown and KaTeX as students will see it.
    form = review.locator(f"#m{first_reply.id} [data-testid=review-form]")
    form.locator("textarea").fill(CORRECTION)
    preview = form.locator('[data-testid="preview"]')
    preview.locator(".katex").first.wait_for()
    assert preview.locator("strong").inner_text() == "6"
    screen_check(review, None, "review-conversation")
    review.set_viewport_size(DESKTOP)
    form.locator('[data-testid="approve"]').click()
    review.locator('[data-testid="notice"]').filter(has_text="Saved and approved for training.").wait_for()
    assert ReplyReview.objects.get(message=first_reply).correction == CORRECTION

    # Shortcuts: the reply is current after the save; j moves on, r rejects, n the next conversation.
    review.locator(f"#m{first_reply.id}.current").wait_for()
    review.keyboard.press("j")
    review.locator(f"#m{second_reply.id}.current").wait_for()
    review.keyboard.press("r")
    review.locator(f"#m{second_reply.id} [data-testid=rejected]").wait_for()
    assert ReplyReview.objects.get(message=second_reply).decision == ReviewDecision.REJECTED
    review.keyboard.press("n")
    review.wait_for_url(re.compile(f"/conversations/{later.id}/"))
    review.locator(".msg .md").first.wait_for()
    review.locator("textarea").first.focus()
    review.keyboard.press("a")  # typing in a field is never a shortcut
    assert review.locator("textarea").first.input_value() == "a"
    assert not ReplyReview.objects.filter(message__conversation=later).exists()
