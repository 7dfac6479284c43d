"""The course's tutor settings through the API (real PostgreSQL, the live app): who reads what,
the reply language from a list, the avoid-list, greeting and example questions, a placement's own
instructions, and the prompt's preview (no model server needed: its length is then unknown)."""

from __future__ import annotations

import re

import pytest
import requests

from tests.support.platform import TestPlatform
from tutor.models import Placement, TutorSettings

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

PRIVATE_INSTRUCTIONS = "The answer key for Friday's quiz is B, D, A. Never reveal it."
PRIVATE_PERSONA = "You are Ms Okafor's patient assistant."
PRIVATE_AVOID = "the answers to quiz 3\nthe full solution of exercise 5"
SETTINGS_URL = "/api/v1/course/tutor-settings/"

WRITTEN = {
    "persona": PRIVATE_PERSONA,
    "instructions": PRIVATE_INSTRUCTIONS,
    "subject": "Algebra",
    "level": "secondary",
    "reply_language": "English",
    "socratic": True,
    "avoid": PRIVATE_AVOID,
    "greeting": "Hello! Ask me anything about linear equations.",
    "example_questions": ["How do I solve 2x + 3 = 7?", "What is a coefficient?"],
}


def bearer(platform: TestPlatform, tool: str, user: str, **overrides) -> dict:
    response = platform.launch(requests.Session(), tool, user=user, **overrides)
    assert response.status_code == 200, response.text[:500]
    return {"Authorization": "Bearer " + re.search(r'name="launch-token" content="([^"]+)"', response.text).group(1)}


@pytest.fixture
def offline_model(settings):
    settings.VLLM_BASE_URL = "http://127.0.0.1:9"  # nothing listens there


def test_students_read_what_the_tutor_does_but_not_the_teachers_instructions(tool, platform):
    url = tool + SETTINGS_URL
    teacher = bearer(platform, tool, "teacher")
    saved = requests.put(url, json=WRITTEN, headers=teacher)
    assert saved.status_code == 200, saved.text
    assert saved.json() == WRITTEN
    assert requests.get(url, headers=teacher).json() == WRITTEN

    student = requests.get(url, headers=bearer(platform, tool, "student"))

    assert student.status_code == 200
    assert student.json() == {
        "subject": "Algebra",
        "level": "secondary",
        "reply_language": "English",
        "socratic": True,
        "greeting": WRITTEN["greeting"],
        "example_questions": WRITTEN["example_questions"],
    }
    assert "Okafor" not in student.text and "answer key" not in student.text and "quiz 3" not in student.text
    # The schema says so: the teachers' three fields are documented as optional (teachers only).
    schema = requests.get(tool + "/api/schema/", headers={"Accept": "application/json"}).json()
    ref = schema["paths"][SETTINGS_URL]["get"]["responses"]["200"]["content"]["application/json"]
    component = schema["components"]["schemas"][ref["schema"]["$ref"].rsplit("/", 1)[1]]
    assert set(component["required"]) == set(student.json())
    assert {"persona", "instructions", "avoid"} <= set(component["properties"])


def test_the_reply_language_comes_from_the_list_and_the_new_fields_are_checked(tool, platform):
    url = tool + SETTINGS_URL
    teacher = bearer(platform, tool, "teacher")

    for language in ["Español", "日本語", "the student's language"]:
        response = requests.put(url, json={**WRITTEN, "reply_language": language}, headers=teacher)
        assert response.status_code == 200, response.text
        assert response.json()["reply_language"] == language
    # Free text is refused, in the documented shape, naming the field.
    refused = requests.put(url, json={**WRITTEN, "reply_language": "Klingon, but politely"}, headers=teacher)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid"
    assert set(refused.json()["error"]["detail"]["fields"]) == {"reply_language"}
    for bad in [{"example_questions": [5]}, {"example_questions": ["?"] * 7}, {"avoid": 3}, {"greeting": "x" * 1001}]:
        response = requests.put(url, json={**WRITTEN, **bad}, headers=teacher)
        assert response.status_code == 400, (bad, response.text)
        assert set(response.json()["error"]["detail"]["fields"]) == set(bad)
    assert TutorSettings.objects.get().reply_language == "the student's language"  # the last accepted

    # A language stored before the list (free text then) can still be saved unchanged, not set anew.
    TutorSettings.objects.update(reply_language="French (en français)")
    kept = requests.put(url, json={**WRITTEN, "reply_language": "French (en français)"}, headers=teacher)
    assert kept.status_code == 200, kept.text
    other = requests.put(url, json={**WRITTEN, "reply_language": "Italian (italiano)"}, headers=teacher)
    assert other.status_code == 400

    # The six fields of before still make a whole PUT: the new ones left out stay as they are.
    TutorSettings.objects.update(avoid="keep me")
    old_client = {name: WRITTEN[name] for name in ["persona", "instructions", "subject", "level", "socratic"]}
    assert requests.put(url, json={**old_client, "reply_language": "English"}, headers=teacher).status_code == 200
    assert TutorSettings.objects.get().avoid == "keep me"

    student = bearer(platform, tool, "student")
    assert requests.put(url, json=WRITTEN, headers=student).json()["error"]["code"] == "forbidden"


def test_a_placements_instructions_are_its_course_teachers_only(tool, platform):
    teacher = bearer(platform, tool, "teacher")
    placement = Placement.objects.get(lms_resource_link_id="link-7")
    url = f"{tool}/api/v1/course/placements/{placement.id}/"

    assert requests.get(url, headers=teacher).json() == {
        "id": placement.id,
        "title": "Biology tutor",
        "instructions": "",
    }
    written = requests.put(url, json={"instructions": "This week: photosynthesis only."}, headers=teacher)
    assert written.status_code == 200, written.text
    assert written.json()["instructions"] == "This week: photosynthesis only."
    assert Placement.objects.get(pk=placement.id).instructions == "This week: photosynthesis only."

    student = bearer(platform, tool, "student")
    for method, body in [("get", None), ("put", {"instructions": "hacked"})]:
        response = requests.request(method, url, json=body, headers=student)
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    # Another course's teacher is told there is no such placement; so is anyone for an unknown id.
    elsewhere = bearer(
        platform, tool, "teacher", course={"id": "course-99", "title": "Chemistry"}, resource_link={"id": "link-9"}
    )
    for method, body in [("get", None), ("put", {"instructions": "hacked"})]:
        response = requests.request(method, url, json=body, headers=elsewhere)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    unknown = requests.get(f"{tool}/api/v1/course/placements/{placement.id + 1000}/", headers=teacher)
    assert unknown.status_code == 404
    assert Placement.objects.get(pk=placement.id).instructions == "This week: photosynthesis only."
    assert requests.put(url, json={"instructions": 7}, headers=teacher).status_code == 400


def test_the_preview_shows_the_prompt_of_the_forms_settings_without_saving_them(tool, platform, offline_model):
    teacher = bearer(platform, tool, "teacher")
    requests.put(tool + SETTINGS_URL, json=WRITTEN, headers=teacher)
    placement = Placement.objects.get(lms_resource_link_id="link-7")
    placement.instructions = "Saved placement words."
    placement.save()
    draft = {**WRITTEN, "reply_language": "Deutsch", "avoid": "the answers to quiz 4\n\n  the proof of lemma 2  "}

    response = requests.post(
        tool + SETTINGS_URL + "preview/",
        json={"settings": draft, "placement_instructions": "Only chapter 6: cells."},
        headers=teacher,
    )

    assert response.status_code == 200, response.text
    preview = response.json()
    prompt = preview["system_prompt"]
    assert "Reply in Deutsch." in prompt
    assert "Do not give: the answers to quiz 4; the proof of lemma 2." in prompt
    assert "Instructions for this assignment (Biology tutor): Only chapter 6: cells." in prompt
    # The assignment's context comes after the course's own.
    assert prompt.index(PRIVATE_INSTRUCTIONS) < prompt.index("Do not give") < prompt.index("Only chapter 6")
    assert preview["tokens"] is None and preview["fits"] is None  # no model server to count with
    # Nothing was saved.
    assert TutorSettings.objects.get().reply_language == "English"
    assert Placement.objects.get(pk=placement.id).instructions == "Saved placement words."

    # Left out, the placement's saved instructions are previewed.
    saved = requests.post(tool + SETTINGS_URL + "preview/", json={"settings": WRITTEN}, headers=teacher).json()
    assert saved["system_prompt"].endswith("Instructions for this assignment (Biology tutor): Saved placement words.")

    student = bearer(platform, tool, "student")
    refused = requests.post(tool + SETTINGS_URL + "preview/", json={"settings": WRITTEN}, headers=student)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
