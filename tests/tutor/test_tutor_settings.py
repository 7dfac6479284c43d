"""Who reads the course's tutor settings: the teachers' persona and instructions stay theirs."""

from __future__ import annotations

import re

import pytest
import requests

from tests.support.platform import TestPlatform

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

PRIVATE_INSTRUCTIONS = "The answer key for Friday's quiz is B, D, A. Never reveal it."
PRIVATE_PERSONA = "You are Ms Okafor's patient assistant."


def bearer(platform: TestPlatform, tool: str, user: str) -> dict:
    response = platform.launch(requests.Session(), tool, user=user)
    assert response.status_code == 200, response.text[:500]
    return {"Authorization": "Bearer " + re.search(r'name="launch-token" content="([^"]+)"', response.text).group(1)}


def test_students_read_what_the_tutor_does_but_not_the_teachers_instructions(tool, platform):
    url = tool + "/api/v1/course/tutor-settings/"
    teacher = bearer(platform, tool, "teacher")
    written = {
        "persona": PRIVATE_PERSONA,
        "instructions": PRIVATE_INSTRUCTIONS,
        "subject": "Algebra",
        "level": "secondary",
        "reply_language": "English",
        "socratic": True,
    }
    assert requests.put(url, json=written, headers=teacher).status_code == 200
    assert requests.get(url, headers=teacher).json() == written

    student = requests.get(url, headers=bearer(platform, tool, "student"))

    assert student.status_code == 200
    assert student.json() == {"subject": "Algebra", "level": "secondary", "reply_language": "English", "socratic": True}
    assert "Okafor" not in student.text and "answer key" not in student.text
    # The schema says so: the two fields are documented as optional (teachers only).
    schema = requests.get(tool + "/api/schema/", headers={"Accept": "application/json"}).json()
    ref = schema["paths"]["/api/v1/course/tutor-settings/"]["get"]["responses"]["200"]["content"]["application/json"]
    component = schema["components"]["schemas"][ref["schema"]["$ref"].rsplit("/", 1)[1]]
    assert set(component["required"]) == set(student.json())
    assert {"persona", "instructions"} <= set(component["properties"])
