"""Escalation on a real Celery worker (prefork, the real Redis broker, the test database): an urgent
flag nobody acknowledges goes to the administrators once SAFETY_ESCALATE_AFTER_MINUTES have passed;
one a teacher acknowledged in time never does, and the periodic sweep does not send it twice."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings

from devlms.outbox import SEPARATOR
from tests.tutor.test_alerts import SELF_HARM, addresses_put, launched, student_says
from tutor.models import Flag, FlagAlert
from tutor.tasks import flags_escalate_due

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

DELAY_MINUTES = 0.1  # six seconds


@pytest.fixture
def escalation_worker(tool, celery_worker_log):
    """The session's worker of the `default` queue: it runs with the web server's PUBLIC_BASE_URL,
    as deployed (the emails link to the safety queue)."""
    return celery_worker_log


def emails_about(flag: Flag) -> list[str]:
    """The messages the worker's file backend wrote (EMAIL_FILE_PATH) that are about this flag."""
    folder = Path(django_settings.EMAIL_FILE_PATH)
    messages = [raw.decode() for path in folder.glob("*.log") for raw in path.read_bytes().split(SEPARATOR)]
    return [message for message in messages if f"Flag {flag.id}, raised" in message]


def test_an_unacknowledged_urgent_flag_escalates_to_the_admins_after_the_delay(
    tool, platform, settings, escalation_worker
):
    settings.SAFETY_ESCALATE_AFTER_MINUTES = DELAY_MINUTES
    settings.VLLM_BASE_URL = "http://127.0.0.1:9"  # screened messages never need the model
    admin, *_ = launched(platform, tool, "admin")
    assert addresses_put(tool, admin, escalation_emails="head@school.example").status_code == 200
    teacher, *_ = launched(platform, tool, "teacher")
    student, *_ = launched(platform, tool, "student")

    left = student_says(tool, student, SELF_HARM)
    handled = student_says(tool, student, "my stepdad hits me when he is drunk", left["conversation_id"])
    left_flag, handled_flag = (Flag.objects.get(message_id=m["message"]["id"]) for m in (left, handled))
    acknowledged = requests.post(
        f"{tool}/api/v1/review/flags/{handled_flag.id}/actions/",
        json={"action": "acknowledge", "note": "Talking to her after class."},
        headers=teacher,
    )
    assert acknowledged.status_code == 201
    assert left_flag.escalate_at == left_flag.created_at + timedelta(minutes=DELAY_MINUTES)

    deadline = time.monotonic() + 120
    while not FlagAlert.objects.filter(flag=left_flag, kind="escalation").exists():
        assert time.monotonic() < deadline, "no escalation:\n" + escalation_worker.read_text()[-3000:]
        time.sleep(0.5)

    alert = FlagAlert.objects.get(flag=left_flag, kind="escalation")
    assert (alert.status, alert.recipients) == ("sent", ["head@school.example"])
    left_flag.refresh_from_db()
    assert left_flag.escalated_at >= left_flag.escalate_at  # not before the configured delay
    assert alert.created_at >= left_flag.escalate_at
    (email,) = emails_about(left_flag)
    assert "To: head@school.example" in email and "Not acknowledged" in email
    assert "<PERSON>" in email and "Ada" not in email and "07700" not in email
    assert f"{tool}/review/{left_flag.course_id}/flags/?state=all#flag-{left_flag.id}" in email

    # The sweep (what beat runs) finds nothing more to do, on the worker as well.
    assert flags_escalate_due.delay().get(timeout=60) == 0
    time.sleep(DELAY_MINUTES * 60)  # the acknowledged flag's time has come and gone too
    assert flags_escalate_due.delay().get(timeout=60) == 0
    handled_flag.refresh_from_db()
    assert handled_flag.escalated_at is None and handled_flag.state == "acknowledged"
    assert not FlagAlert.objects.filter(flag=handled_flag, kind="escalation").exists()
    assert FlagAlert.objects.filter(flag=left_flag, kind="escalation").count() == 1
    assert len(emails_about(left_flag)) == 1
