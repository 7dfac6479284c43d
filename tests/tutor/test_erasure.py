"""Erasure (command and LTI Data Privacy Launch) and retention (a periodic Celery task)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.apps import apps
from django.core.management import call_command
from django.utils import timezone

from tests.support.chat import ISSUER, conversation_for, exchange, member
from tests.support.platform import DROP
from training.datasets import dataset_export
from training.models import DatasetExample, DatasetExport
from tutor.models import Conversation, ErasureRecord, Person, ReviewDecision, Role
from tutor.review import message_flag_set, reply_review_update
from tutor.services import pseudonym_for, training_consent_set

# Every table that can hold something about a student, with how to find their rows.
STUDENT_ROWS = {
    "tutor.Person": lambda p: {"pk": p},
    "tutor.Membership": lambda p: {"person_id": p},
    "tutor.MemberName": lambda p: {"membership__person_id": p},
    "tutor.Conversation": lambda p: {"person_id": p},
    "tutor.Message": lambda p: {"conversation__person_id": p},
    "tutor.ReplyReview": lambda p: {"message__conversation__person_id": p},
    "tutor.Flag": lambda p: {"conversation__person_id": p},
    "tutor.ReviewEvent": lambda p: {"message__conversation__person_id": p},
    "training.DatasetExample": lambda p: {"conversation__person_id": p},
}


def rows_about(person_id: int) -> dict[str, int]:
    return {
        label: apps.get_model(label).objects.filter(**where(person_id)).count() for label, where in STUDENT_ROWS.items()
    }


@pytest.fixture
def course_with_export(demo_model, tmp_path, django_capture_on_commit_callbacks):
    teacher = member("t1", role=Role.TEACHER, name="Tess Teacher")
    training_consent_set(course=teacher.course, actor=teacher, allowed=True)
    erased = member("s-erased", name="Erin Erased")
    kept = member("s-kept", name="Kim Kept")
    for student, topic in ((erased, "volcanoes"), (kept, "glaciers")):
        _, reply = exchange(conversation_for(student), f"Tell me about {topic}", f"{topic} are interesting.")
        reply_review_update(
            reviewer=teacher,
            message_id=reply.id,
            correction=f"All about {topic}.",
            decision=ReviewDecision.APPROVED,
            ratings={"helpful": True},
        )
        message_flag_set(reviewer=teacher, message_id=reply.id, flagged=True)
    export = dataset_export(course=teacher.course, out=tmp_path / "before.jsonl", eval_fraction=0)
    return teacher, erased, kept, export


@pytest.mark.django_db
def test_erase_student_removes_every_row_and_the_next_export_has_nothing_of_theirs(
    course_with_export, tmp_path, capsys, django_capture_on_commit_callbacks
):
    teacher, erased, kept, export = course_with_export
    assert all(rows_about(erased.person_id).values())  # every table held something about them
    assert "volcanoes" in Path(export.train_path).read_text()

    with django_capture_on_commit_callbacks(execute=True):
        call_command("erase_student", "--issuer", ISSUER, "--sub", "s-erased")
    assert "tutor.Message: 2" in capsys.readouterr().out

    assert rows_about(erased.person_id) == dict.fromkeys(STUDENT_ROWS, 0)
    assert all(rows_about(kept.person_id).values())
    export.refresh_from_db()
    assert export.status == DatasetExport.Status.PURGED and not Path(export.train_path).exists()
    record = ErasureRecord.objects.get()
    assert record.requested_via == "command" and "Erin" not in json.dumps(record.rows_deleted)

    after = dataset_export(course=teacher.course, out=tmp_path / "after.jsonl", eval_fraction=0)
    text = Path(after.train_path).read_text()
    assert "glaciers" in text and "volcanoes" not in text

    call_command("erase_student", "--issuer", ISSUER, "--sub", "s-erased")
    assert "Nothing is held" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
@pytest.mark.live
def test_data_privacy_launch_erases_after_confirmation(tool, platform):
    browser = requests.Session()
    assert platform.launch(browser, tool, user="student").status_code == 200
    person = Person.objects.get(pseudonym=pseudonym_for(issuer=platform.issuer, subject="devlms-student-1"))
    conversation_for(person.memberships.get())

    def privacy_launch(user: str, for_user: str) -> requests.Response:
        return platform.launch(
            requests.Session(),
            tool,
            user=user,
            message_type="DataPrivacyLaunchRequest",
            lti_context=DROP,
            lti_for_user={"user_id": for_user},
        )

    refused = privacy_launch("teacher", "devlms-student-1")  # a teacher may not erase a student
    assert refused.status_code == 403 and "administrator" in refused.text
    page = privacy_launch("admin", "devlms-student-1")
    assert page.status_code == 200, page.text[:500]
    assert Person.objects.filter(pk=person.pk).exists()  # nothing happens before confirmation
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
    done = requests.post(tool + "/lti/data-privacy/erase/", data={"token": token})
    assert done.status_code == 200 and "has been deleted" in done.text
    assert not Person.objects.filter(pk=person.pk).exists()
    assert ErasureRecord.objects.get().requested_via == "lti_data_privacy"
    forged = requests.post(tool + "/lti/data-privacy/erase/", data={"token": token + "x"})
    assert forged.status_code == 403


@pytest.mark.django_db(transaction=True)
def test_retention_runs_as_a_celery_task_on_a_real_worker(celery_worker_log, settings):
    from config.celery import app
    from tutor.tasks import conversations_expire

    student = member("s-old")
    old = conversation_for(student)
    recent = conversation_for(student)
    Conversation.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=400))

    result = conversations_expire.delay()
    assert result.get(timeout=60) == {"tutor.Conversation": 1}
    assert "conversations_expire" in celery_worker_log.read_text()
    assert list(Conversation.objects.values_list("pk", flat=True)) == [recent.pk]
    assert app.conf.beat_schedule["conversations-expire"]["task"] == conversations_expire.name
    assert DatasetExample.objects.count() == 0
