"""A training job's state machine where a worker died or people disagree: a job whose adapter was
promoted before its worker died is finished, not retrained; a cancelled orphan rejects its
candidate; a redelivered task waits out a live worker's lease; decisions cannot be undone; a move
the transitions do not list is refused; a course has one active job, the database says so too,
and two starts that race are answered as a second start is."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from serving.adapters import AdapterError, adapter_promote
from serving.models import AdapterVersion
from tests.support.chat import conversation_for, exchange, member
from training.jobs import (
    InvalidTransition,
    JobConflict,
    job_claim,
    job_decide,
    job_run,
    job_transition,
    training_job_start,
)
from training.models import DatasetExport, TrainingJob
from training.selectors import job_lease_wait
from tutor.errors import DomainError
from tutor.models import ReviewDecision, Role
from tutor.review import reply_review_update
from tutor.services import training_consent_set

pytestmark = [pytest.mark.django_db]  # tiers come from the fixtures each test uses (tests/conftest.py)


@pytest.fixture
def course():
    return member("t1", role=Role.TEACHER).course


def adapter(course, status: str, version: int = 1) -> AdapterVersion:
    return AdapterVersion.objects.create(
        course=course, version=version, name=f"course-{course.pk}-v{version}", path="/nowhere", status=status
    )


def orphaned_job(course, **fields) -> TrainingJob:
    """A job whose worker died: active, its lease run out."""
    return TrainingJob.objects.create(
        course=course, state="evaluating", lease_until=timezone.now() - timedelta(seconds=1), **fields
    )


def test_a_job_whose_adapter_was_promoted_before_its_worker_died_is_finished_not_retrained(course):
    served = adapter(course, "active")
    job = orphaned_job(course, adapter=served)  # no dataset: retraining it would fail
    assert job_run(job_id=job.pk) == "promoted"
    job.refresh_from_db()
    assert (job.state, job.error) == ("promoted", "")
    assert job.events.filter(message__endswith="was promoted before the worker stopped").exists()
    assert AdapterVersion.objects.filter(course=course).count() == 1


def test_a_cancelled_orphan_rejects_its_candidate(course, django_capture_on_commit_callbacks):
    candidate = adapter(course, "candidate")
    job = orphaned_job(course, adapter=candidate, cancel_requested=True)
    with django_capture_on_commit_callbacks() as unloads:
        assert job_claim(job_id=job.pk) is None
    job.refresh_from_db(), candidate.refresh_from_db()
    assert (job.state, job.lease_until, candidate.status) == ("cancelled", None, "rejected")
    assert len(unloads) == 1


def test_a_task_delivered_while_a_live_worker_holds_the_job_waits_out_the_lease(course):
    job = TrainingJob.objects.create(
        course=course, state="training", lease_until=timezone.now() + timedelta(seconds=90)
    )
    assert job_claim(job_id=job.pk) is None  # held
    assert 89 < job_lease_wait(job_id=job.pk) <= 91  # the task retries once the lease has run out
    TrainingJob.objects.filter(pk=job.pk).update(state="promoted", lease_until=None)
    assert job_lease_wait(job_id=job.pk) is None  # finished: a redelivery just skips


def test_a_rejected_adapter_cannot_be_promoted(course):
    rejected = adapter(course, "rejected")
    with pytest.raises(AdapterError, match="was rejected"):
        adapter_promote(adapter=rejected)
    assert AdapterVersion.objects.get(pk=rejected.pk).status == "rejected"


def test_a_decided_job_cannot_be_decided_again(course, django_capture_on_commit_callbacks):
    candidate = adapter(course, "candidate")
    job = TrainingJob.objects.create(course=course, state="ready", adapter=candidate)
    with django_capture_on_commit_callbacks(execute=False):
        assert job_decide(course_id=course.pk, job_id=job.pk, promote=False).state == "rejected"
    with pytest.raises(DomainError, match="waiting for a decision"):
        job_decide(course_id=course.pk, job_id=job.pk, promote=True)
    assert AdapterVersion.objects.get(pk=candidate.pk).status == "rejected"


def test_a_move_the_transitions_do_not_list_is_refused(course):
    job = TrainingJob.objects.create(course=course, state="promoted")
    with pytest.raises(InvalidTransition):
        job_transition(job_id=job.pk, to="training", from_states=("promoted",))
    assert not job_transition(job_id=job.pk, to="cancelled")  # listed, from the active states only
    assert TrainingJob.objects.get(pk=job.pk).state == "promoted"
    assert [e.state for e in job.events.all()] == []


def test_leaving_the_active_states_ends_a_job_and_a_decision_keeps_when_it_ended(course):
    job = TrainingJob.objects.create(
        course=course, state="evaluating", lease_until=timezone.now() + timedelta(minutes=5), phase="evaluating"
    )
    assert job_transition(job_id=job.pk, to="ready", from_states=("evaluating",), message="gate not passed")
    job.refresh_from_db()
    ended = job.finished_at
    assert (job.state, job.lease_until, job.phase, ended is not None) == ("ready", None, "", True)
    assert job_transition(job_id=job.pk, to="rejected")
    assert TrainingJob.objects.get(pk=job.pk).finished_at == ended
    assert [(e.state, e.message) for e in job.events.all()] == [("ready", "gate not passed"), ("rejected", "")]


def test_the_database_refuses_a_second_active_job_for_a_course(course):
    TrainingJob.objects.create(course=course, state="promoted")
    TrainingJob.objects.create(course=course, state="training")
    with pytest.raises(IntegrityError), transaction.atomic():
        TrainingJob.objects.create(course=course)  # queued
    assert TrainingJob.objects.filter(course=course).count() == 2
    TrainingJob.objects.create(course=member("t2", role=Role.TEACHER, context="course-2").course)  # another course


def _blocking_another_backend() -> bool:
    """Whether a statement of another connection waits for this connection's transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # pg_stat_activity is read once per transaction
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid)))"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_two_starts_that_race_queue_one_job_and_the_second_is_told_it_is_running(demo_model, settings, tmp_path):
    settings.TRAINING_DATA_DIR, settings.TRAINING_JOBS_DIR = str(tmp_path / "data"), str(tmp_path / "jobs")
    teacher = member("t1", role=Role.TEACHER)
    _, reply = exchange(conversation_for(member("s1")), "What is 12 plus 34?", "46.")
    reply_review_update(reviewer=teacher, message_id=reply.id, decision=ReviewDecision.APPROVED)
    training_consent_set(course=teacher.course, actor=teacher, allowed=True)
    inserted = threading.Event()

    def other_start() -> None:
        """Another request's start: its job's row is written but not committed while ours checks
        and exports; it commits once our insert waits on it."""
        try:
            with transaction.atomic():
                TrainingJob.objects.create(course_id=teacher.course_id)
                inserted.set()
                deadline = time.monotonic() + 60
                while not _blocking_another_backend() and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            connection.close()

    racer = threading.Thread(target=other_start)
    racer.start()
    assert inserted.wait(10)
    with pytest.raises(JobConflict) as refused:
        training_job_start(course=teacher.course, requested_by=teacher.person)
    racer.join()
    assert (refused.value.status, refused.value.code) == (409, "training_job_running")
    assert DatasetExport.objects.filter(course=teacher.course).count() == 1  # ours got past the check
    assert TrainingJob.objects.filter(course=teacher.course).count() == 1
