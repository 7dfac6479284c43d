"""A training job's state machine where a worker died or people disagree: a job whose adapter was
promoted before its worker died is finished, not retrained; a cancelled orphan rejects its
candidate; a redelivered task waits out a live worker's lease; decisions cannot be undone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from serving.adapters import AdapterError, adapter_promote
from serving.models import AdapterVersion
from tests.support.chat import member
from training.jobs import job_claim, job_decide, job_lease_wait, job_run
from training.models import TrainingJob
from tutor.errors import DomainError
from tutor.models import Role

pytestmark = [pytest.mark.django_db, pytest.mark.fast]


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
        assert job_decide(job_id=job.pk, promote=False).state == "rejected"
    with pytest.raises(DomainError, match="waiting for a decision"):
        job_decide(job_id=job.pk, promote=True)
    assert AdapterVersion.objects.get(pk=candidate.pk).status == "rejected"
