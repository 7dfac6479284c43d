"""End to end: PII typed into the chat never reaches the scrubbed columns, the dataset or the logs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import requests

from devlms.platform import LIS, DevUser
from training.models import DatasetExport
from tutor.models import Message, ReplyReview, ReviewEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.real_model]

CLASSMATE = DevUser("classmate", "devlms-student-9", "Ben Okafor", (LIS + "membership#Learner",))
PII = [
    "Aisha",
    "Khan",
    "aisha.khan@oakfield.sch.uk",
    "07700 900123",
    "+44 7700 900987",
    "20231847",
    "14 Elm Grove",
    "LS6 2AB",
    "Ben",
    "Okafor",
    "instagram.com/aisha_k",
    "14/03/2010",
]
MESSAGES = [
    "Hi, I'm Aisha Khan, my email is aisha.khan@oakfield.sch.uk and my phone is 07700 900123. What is photosynthesis?",
    "My student number is 20231847 and I live at 14 Elm Grove, Leeds LS6 2AB. Why do plants need light?",
    "ben okafor says chlorophyll is green because it reflects green light, is he right? "
    "text him on +44 7700 900987 or see instagram.com/aisha_k. I was born on 14/03/2010.",
]


def bearer(platform, base, user, **overrides) -> dict:
    response = platform.launch(requests.Session(), base, user=user, **overrides)
    assert response.status_code == 200, response.text[:500]
    return {"Authorization": "Bearer " + re.search(r'name="launch-token" content="([^"]+)"', response.text).group(1)}


def test_pii_never_reaches_scrubbed_text_exports_or_logs(chat_tool, platform, caplog, demo_model):
    caplog.set_level(logging.DEBUG)
    bearer(platform, chat_tool, CLASSMATE)  # the LMS told us the classmate's name
    student = bearer(platform, chat_tool, "student", name="Aisha Khan", given_name="Aisha", family_name="Khan")
    teacher = bearer(platform, chat_tool, "teacher")
    admin = bearer(platform, chat_tool, "admin")

    conversation = requests.post(chat_tool + "/api/v1/conversations/", headers=student).json()["id"]
    for text in MESSAGES:
        sent = requests.post(
            f"{chat_tool}/api/v1/conversations/{conversation}/messages/", json={"content": text}, headers=student
        )
        assert sent.status_code == 201, sent.text
        assert sent.json()["message"]["content"] == text  # the student sees what they wrote

    assert requests.put(
        chat_tool + "/api/v1/course/training-consent/", json={"allowed": True}, headers=teacher
    ).json() == {"allowed": True}
    replies = Message.objects.filter(conversation_id=conversation, sender="assistant").order_by("id")
    for index, reply in enumerate(replies):
        body = {"decision": "approved", "helpful": True}
        if index == 1:  # the teacher's correction names the student too
            body["correction"] = (
                "Well done Aisha! Plants use light energy to make glucose; email aisha.khan@oakfield.sch.uk"
            )
        response = requests.patch(f"{chat_tool}/api/v1/review/replies/{reply.id}/", json=body, headers=teacher)
        assert response.status_code == 200, response.text
        assert "Aisha" not in response.text  # teachers see the scrubbed text

    assert (
        requests.post(
            chat_tool + "/api/v1/course/dataset-exports/", json={"eval_fraction": 0}, headers=teacher
        ).status_code
        == 403
    )  # exporting is for administrators
    exported = requests.post(chat_tool + "/api/v1/course/dataset-exports/", json={"eval_fraction": 0}, headers=admin)
    assert exported.status_code == 201, exported.text
    export = DatasetExport.objects.get(pk=exported.json()["id"])
    dataset = Path(export.train_path).read_text()
    assert "photosynthesis" in dataset and "Plants use light energy" in dataset and "<PERSON>" in dataset

    scrubbed_columns = "\n".join(
        [m.content_scrubbed for m in Message.objects.all()]
        + [r.correction_scrubbed for r in ReplyReview.objects.all()]
        + [str(e.detail) for e in ReviewEvent.objects.all()]
        + [str(export.report)]
    )
    for value in PII:
        for where, text in (("dataset", dataset), ("scrubbed columns", scrubbed_columns), ("logs", caplog.text)):
            assert value.lower() not in text.lower(), f"{value!r} found in the {where}"
    assert Message.objects.filter(content__contains="aisha.khan@oakfield.sch.uk").exists()  # the original is kept
