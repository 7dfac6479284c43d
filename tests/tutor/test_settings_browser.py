"""A teacher sets the course's tutor up as a person would: launched from the development LMS, the
tool in its iframe, at a phone's and a desktop's width, in Chromium with the real model answering."""

from __future__ import annotations

import pytest

from tests.support.screens import lms_launch, screen_check
from tutor.models import Conversation, Flag, Message, SystemPrompt, TutorSettings

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.real_model]


def test_a_teacher_edits_the_tutor_previews_its_prompt_and_tries_it_as_a_student(asgi_url, devlms_page):
    page = devlms_page(asgi_url)
    frame = lms_launch(page, asgi_url, user="teacher")
    frame.get_by_text("Course tutor settings").click()
    form = frame.locator("#settings-form")
    # The form shows what is saved once loaded: the default language, picked from the list.
    assert form.get_by_label("Reply language").input_value() == "the student's language"

    form.get_by_label("Reply language").select_option("Español")
    form.get_by_label("Avoid-list, one a line").fill("the answers to quiz 3\nthe full lab report")
    form.get_by_label("Greeting").fill("¡Hola! Pregúntame sobre las células.")
    form.get_by_label("Example questions, one a line").fill("¿Qué es una célula?\n\n¿Qué hace el núcleo?")
    form.get_by_label("Instructions added for this assignment").fill("Solo el capítulo 6.")
    form.get_by_role("button", name="Save settings").click()
    frame.locator("#settings-status", has_text="Saved.").wait_for()

    saved = TutorSettings.objects.get()
    assert (saved.reply_language, saved.avoid) == ("Español", "the answers to quiz 3\nthe full lab report")
    assert saved.example_questions == ["¿Qué es una célula?", "¿Qué hace el núcleo?"]
    assert saved.course.placements.get().instructions == "Solo el capítulo 6."

    # The preview is the server's prompt, of the form as it stands (an unsaved change included).
    form.get_by_label("Subject").fill("Biología celular")
    form.get_by_role("button", name="Preview the prompt").click()
    prompt = frame.get_by_test_id("prompt-text")
    prompt.wait_for()
    text = prompt.inner_text()
    assert "Reply in Español." in text and "students of Biología celular" in text
    assert "Do not give: the answers to quiz 3; the full lab report." in text
    assert text.rstrip().endswith("Solo el capítulo 6.")
    assert "tokens" in frame.locator("#prompt-size").inner_text()
    screen_check(page, frame, "teacher-settings-preview")

    # Try it as a student: an answer, then a message the safety rules answer; nothing recorded.
    page.set_viewport_size({"width": 1280, "height": 800})
    frame.get_by_label("A student's message").fill("¿Qué es una célula?")
    frame.get_by_role("button", name="Send as a student").click()
    frame.locator("#try-status", has_text="Not recorded.").wait_for(timeout=120_000)
    assert frame.get_by_test_id("try-reply").inner_text().strip()
    frame.get_by_label("A student's message").fill("quiero morirme")
    frame.get_by_role("button", name="Send as a student").click()
    frame.locator("#try-status", has_text="No flag was raised").wait_for(timeout=60_000)
    assert "He avisado a tu profesor" in frame.get_by_test_id("try-reply").inner_text()
    frame.get_by_test_id("try-reply").scroll_into_view_if_needed()
    screen_check(page, frame, "teacher-try-it")

    assert not Conversation.objects.exists() and not Message.objects.exists() and not Flag.objects.exists()
    assert not SystemPrompt.objects.exists()
    assert TutorSettings.objects.get().subject == ""  # the previewed subject was never saved
