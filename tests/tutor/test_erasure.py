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
from django.db import models
from django.utils import timezone

from tests.support.chat import ISSUER, conversation_for, exchange, member
from tests.support.db import foreign_keys, owned_by, rows_linked
from tests.support.platform import DROP
from training.datasets import dataset_export
from training.models import DatasetExport
from tutor.flags import flag_act
from tutor.models import Conversation, ErasureRecord, Flag, FlagAction, FlagAlert, Person, ReviewDecision, Role
from tutor.review import message_flag_set, reply_review_update
from tutor.services import pseudonym_for, training_consent_set


def rows_about(person_id: int) -> dict[str, frozenset]:
    """Every table a chain of foreign keys leads from to the person (tests.support.db.links_to):
    a table added later that holds something about a student is in it without being listed."""
    return rows_linked(Person, person_id)


def test_every_link_into_a_students_data_cascades():
    """What an erasure deletes is what cascades from the person (`person_erase` deletes the
    Person). A key into their data that does not cascade would keep a row holding part of it (a
    reply, a flag's reason) after the erasure: only a key naming who acted (a teacher raising a
    flag, requesting an export) may be set to NULL instead, and it must point at the Person."""
    owned = set(owned_by(Person))
    kept = [
        f"{key.model._meta.label}.{key.name} -> {key.related_model._meta.label} ({key.remote_field.on_delete.__name__})"
        for key in foreign_keys()
        if key.related_model in owned
        and key.remote_field.on_delete is not models.CASCADE
        and not (key.related_model is Person and key.remote_field.on_delete is models.SET_NULL)
    ]
    assert not kept


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
        flag = Flag.objects.get(message=reply)
        flag_act(reviewer=teacher, flag_id=flag.id, action=FlagAction.Action.ACKNOWLEDGE)
        FlagAlert.objects.create(
            flag=flag, kind=FlagAlert.Kind.BANNER, status=FlagAlert.Status.SHOWN, person=teacher.person
        )
    export = dataset_export(course=teacher.course, out=tmp_path / "before.jsonl", eval_fraction=0)
    return teacher, erased, kept, export


@pytest.mark.django_db
def test_erase_student_removes_every_row_and_the_next_export_has_nothing_of_theirs(
    course_with_export, tmp_path, capsys, django_capture_on_commit_callbacks
):
    teacher, erased, kept, export = course_with_export
    before = rows_about(erased.person_id)
    kept_before = rows_about(kept.person_id)
    # The fixture stores something in every table a student's data lives in (a new one among them
    # fails here until the fixture stores a row in it too, so that its erasure is checked below).
    student_tables = [model._meta.label for model in owned_by(Person)]
    assert [label for label in student_tables if not before[label]] == []
    assert all(kept_before[label] for label in student_tables)
    assert "volcanoes" in Path(export.train_path).read_text()

    with django_capture_on_commit_callbacks(execute=True):
        call_command("erase_student", "--issuer", ISSUER, "--sub", "s-erased")
    assert "tutor.Message: 2" in capsys.readouterr().out

    left = {
        label: apps.get_model(label).objects.filter(pk__in=pks).values_list("pk", flat=True)
        for label, pks in before.items()
    }
    assert {label: list(pks) for label, pks in left.items() if pks} == {}  # deleted, not unlinked
    assert {label: pks for label, pks in rows_about(erased.person_id).items() if pks} == {}
    assert rows_about(kept.person_id) == kept_before
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
def test_retention_runs_as_a_celery_task_on_a_real_worker(celery_worker_log, demo_model, tmp_path):
    from config.celery import app
    from tutor.tasks import conversations_expire

    teacher = member("t-old", role=Role.TEACHER)
    training_consent_set(course=teacher.course, actor=teacher, allowed=True)
    student = member("s-old")
    old, recent = conversation_for(student), conversation_for(student)
    for conversation, topic in ((old, "volcanoes"), (recent, "glaciers")):
        _, reply = exchange(conversation, f"Tell me about {topic}", f"{topic} are interesting.")
        reply_review_update(
            reviewer=teacher, message_id=reply.id, correction=f"All about {topic}.", decision=ReviewDecision.APPROVED
        )
        message_flag_set(reviewer=teacher, message_id=reply.id, flagged=True)
    export = dataset_export(course=teacher.course, out=tmp_path / "d.jsonl", eval_fraction=0)
    Conversation.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(days=400))
    old_rows, recent_rows = rows_linked(Conversation, old.pk), rows_linked(Conversation, recent.pk)
    held = ["tutor.Conversation", "tutor.Message", "tutor.ReplyReview", "tutor.Flag", "training.DatasetExample"]
    assert all(old_rows[label] and recent_rows[label] for label in held)

    result = conversations_expire.delay()
    assert result.get(timeout=60) == {label: len(pks) for label, pks in old_rows.items() if pks}
    assert "conversations_expire" in celery_worker_log.read_text()
    assert app.conf.beat_schedule["conversations-expire"]["task"] == conversations_expire.name
    left = {label: apps.get_model(label).objects.filter(pk__in=pks).count() for label, pks in old_rows.items()}
    assert {label: number for label, number in left.items() if number} == {}
    assert rows_linked(Conversation, recent.pk) == recent_rows
    export.refresh_from_db()
    assert export.status == DatasetExport.Status.PURGED  # it held a line of the expired conversation
    assert ErasureRecord.objects.get(requested_via="retention").rows_deleted == result.get()
