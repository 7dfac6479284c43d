"""Training-job helpers for the tests: a course full of corrected replies, waiting on a job."""

from __future__ import annotations

import random
import time

import requests
from django.utils import timezone

from tests.support.chat import conversation_for, exchange, member
from training.models import TrainingJob
from tutor.models import ReviewDecision, Role
from tutor.review import reply_review_update
from tutor.services import training_consent_set


def wait_for(job: TrainingJob, states: set[str], timeout: float = 600) -> TrainingJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.state in states:
            return job
        time.sleep(0.25)
    raise AssertionError(f"job stayed {job.state}: {job.log_tail[-1500:]} {job.error}")


def wait_for_lease_to_run_out(job: TrainingJob, timeout: float = 120) -> None:
    """Until the lease the job's (dead) worker last renewed has run out: a redelivered task may
    take the job over from then on."""
    deadline = time.monotonic() + timeout
    job.refresh_from_db()
    while job.lease_until is not None and job.lease_until >= timezone.now():
        assert time.monotonic() < deadline, f"the lease stayed until {job.lease_until}"
        time.sleep(max(0.1, min(1.0, (job.lease_until - timezone.now()).total_seconds())))
        job.refresh_from_db()


def corrected_course(platform, tool, *, exchanges: int = 40, long_question: str | None = None) -> tuple:
    """A course whose teacher approved `exchanges` corrected replies (arithmetic, easy to learn);
    with `long_question`, one more exchange asks it (and is approved too)."""
    launch = platform.launch(requests.Session(), tool, user="teacher")
    assert launch.status_code == 200
    teacher = member("devlms-teacher-1", role=Role.TEACHER, context="course-42", issuer=platform.issuer)
    training_consent_set(course=teacher.course, actor=teacher, allowed=True)
    rng = random.Random(1)
    for index in range(exchanges):
        a, b = rng.randint(10, 49), rng.randint(10, 49)
        conversation = conversation_for(member(f"s{index}", context="course-42", issuer=platform.issuer))
        _, reply = exchange(conversation, f"What is {a} plus {b}?", "I am not sure.")
        reply_review_update(
            reviewer=teacher,
            message_id=reply.id,
            correction=f"Add the tens, then the ones: {a} + {b} = {a + b}.",
            decision=ReviewDecision.APPROVED,
        )
    if long_question is not None:
        conversation = conversation_for(member("s-long", context="course-42", issuer=platform.issuer))
        _, reply = exchange(conversation, long_question, "Let me look.")
        reply_review_update(
            reviewer=teacher,
            message_id=reply.id,
            correction="Thank you for the data: the mean is what we compute first.",
            decision=ReviewDecision.APPROVED,
        )
    return teacher, launch
