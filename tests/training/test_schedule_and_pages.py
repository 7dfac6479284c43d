"""The retraining schedule, cancelling, and the administrators' training page (the gate: test_gate.py)."""

from __future__ import annotations

import re

import pytest
import requests
from django.utils import timezone

from serving.models import AdapterVersion
from tests.support.chat import conversation_for, exchange, member
from tests.support.review import review_enter
from training.api import TrainingJobOut
from training.jobs import job_cancel, job_claim, job_fail
from training.models import DatasetExport, JobMetric, TrainingJob
from training.selectors import courses_due_for_retraining
from tutor.models import Course, ReviewDecision, Role
from tutor.review import reply_review_update
from tutor.services import training_consent_set


@pytest.mark.django_db
def test_schedule_picks_consented_courses_with_enough_new_approvals(settings):
    settings.TRAINING_RETRAIN_MIN_NEW_EXAMPLES = 2
    teacher = member("t1", role=Role.TEACHER)
    other = member("t2", role=Role.TEACHER, context="course-2")
    for course_teacher in (teacher, other):
        for index in range(2):
            student = member(f"s{index}", context=course_teacher.course.lms_context_id)
            _, reply = exchange(conversation_for(student), "Q?", "A.")
            reply_review_update(reviewer=course_teacher, message_id=reply.id, decision=ReviewDecision.APPROVED)
    training_consent_set(course=teacher.course, actor=teacher, allowed=True)  # course-2 never consented
    assert courses_due_for_retraining() == [teacher.course_id]
    TrainingJob.objects.create(course=teacher.course, state="promoted")  # approvals since: none
    assert courses_due_for_retraining() == []


@pytest.mark.django_db
def test_a_cancelled_queued_job_never_starts():
    course = member("t1", role=Role.TEACHER).course
    job = TrainingJob.objects.create(course=course)
    assert job_cancel(course_id=course.pk, job_id=job.pk).state == "cancelled"
    assert job_claim(job_id=job.pk) is None
    assert [e.state for e in job.events.all()] == ["cancelled"]


@pytest.mark.django_db
def test_a_job_failing_after_training_rejects_its_candidate_adapter(django_capture_on_commit_callbacks):
    course = member("t1", role=Role.TEACHER).course
    candidate = AdapterVersion.objects.create(course=course, version=1, name="course-x-v1", path="/nowhere")
    job = TrainingJob.objects.create(course=course, state="evaluating", adapter=candidate)
    with django_capture_on_commit_callbacks() as unloads:
        job_fail(job_id=job.pk, error="the evaluation process ran out of memory")
    job.refresh_from_db()
    candidate.refresh_from_db()
    assert (job.state, job.error) == ("failed", "the evaluation process ran out of memory")
    assert candidate.status == "rejected"
    assert len(unloads) == 1  # unloaded from vLLM after the grace period, if evaluation loaded it
    with django_capture_on_commit_callbacks() as unloads:
        job_fail(job_id=job.pk, error="again")  # a job already finished is left as it is
    assert len(unloads) == 0 and TrainingJob.objects.get(pk=job.pk).error == "the evaluation process ran out of memory"


@pytest.mark.django_db
def test_a_polled_job_is_rendered_by_its_declared_serializer_without_the_sample_replies():
    course = member("t1", role=Role.TEACHER).course
    adapter = AdapterVersion.objects.create(course=course, version=1, name="course-x-v1", path="/nowhere")
    job = TrainingJob.objects.create(
        course=course,
        adapter=adapter,
        state="ready",
        step=4,
        total_steps=4,
        train_loss=0.5,
        evaluation={"candidate_loss": 0.25, "samples": [{"question": "Q?"}]},
    )
    assert TrainingJobOut(job).data == {
        "id": job.pk,
        "state": "ready",
        "step": 4,
        "total_steps": 4,
        "train_loss": 0.5,
        "eval_loss": None,
        "eta_seconds": None,
        "phase": "",
        "estimate_seconds": None,
        "peak_memory_bytes": None,
        "evaluation": {"candidate_loss": 0.25},
        "error": "",
        "adapter": "course-x-v1",
    }
    assert TrainingJobOut(TrainingJob.objects.create(course=course)).data["adapter"] is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.live
def test_training_page_is_for_administrators_and_shows_progress(tool, platform):
    pages, bearer = {}, {}
    for user in ("admin", "teacher"):
        browser = requests.Session()
        page = platform.launch(browser, tool, user=user).text
        token = re.search(r'name="launch-token" content="([^"]+)"', page).group(1)
        review_enter(browser, tool, token)
        pages[user], bearer[user] = browser, {"Authorization": f"Bearer {token}"}
    course = Course.objects.get()
    # The landing's "Open the training page": its own tab, entered with the launch token from the tool's page only.
    enter, token = f"{tool}/review/training/enter/", bearer["admin"]["Authorization"].split()[1]
    assert requests.post(enter, data={"t": token}).status_code == 403  # no Origin: not from the tool's page
    entered = requests.post(enter, data={"t": token}, headers={"Origin": tool})
    assert entered.status_code == 200 and entered.url == f"{tool}/review/{course.pk}/training/"
    dataset = DatasetExport.objects.create(
        course=course, train_path="/nonexistent", eval_fraction=0.1, base_model="m", max_tokens=1, status="purged"
    )
    adapter = AdapterVersion.objects.create(
        course=course,
        version=1,
        name=f"course-{course.pk}-v1",
        base_model="m",
        path="/x",
        sha256="0" * 64,
        status="active",
    )
    job = TrainingJob.objects.create(
        course=course,
        dataset=dataset,
        adapter=adapter,
        state="training",
        step=5,
        total_steps=20,
        train_loss=1.5,
        started_at=timezone.now(),
    )
    for step, loss in ((1, 2.5), (3, 2.0), (5, 1.5)):
        JobMetric.objects.create(job=job, step=step, train_loss=loss)

    url = f"{tool}/review/{course.pk}/training/"
    refused = pages["teacher"].get(url)
    assert refused.status_code == 403
    assert "Only administrators" not in refused.text
    assert "Review conversations" in refused.text  # what a teacher can do instead
    assert "Ask an administrator of this course: <strong>" in refused.text  # and who to ask
    assert pages["teacher"].get(url + "live/").status_code == 403
    page = pages["admin"].get(url)
    assert page.status_code == 200
    assert 'value="5"' in page.text and 'max="20"' in page.text  # the progress bar
    assert 'data-testid="train-curve"' in page.text  # the loss curve
    assert 'http-equiv="refresh"' not in page.text  # updated in place instead (training.js)
    assert 'data-testid="erased"' in page.text  # its dataset was purged after an erasure: retrain
    live = pages["admin"].get(url + "live/")
    assert live.status_code == 200 and "<html" not in live.text
    assert f'data-state-key="{job.pk}:training"' in live.text and 'data-poll-ms="2000"' in live.text
    csrf = pages["admin"].cookies["csrftoken"]
    cancelled = pages["admin"].post(
        f"{tool}/review/{course.pk}/training/action/",
        data={"action": "cancel", "job": job.pk, "csrfmiddlewaretoken": csrf},
        headers={"Referer": url},
    )
    assert cancelled.status_code == 200 and "being cancelled" in cancelled.text
    assert TrainingJob.objects.get(pk=job.pk).cancel_requested

    status = f"{tool}/api/v1/course/training/"
    assert requests.get(status, headers=bearer["teacher"]).status_code == 403
    overview = requests.get(status, headers=bearer["admin"]).json()
    assert (overview["serving"], overview["active"], overview["latest"]["id"]) == (adapter.name, True, job.pk)

    api = f"{tool}/api/v1/course/training-jobs/{job.pk}/"
    assert requests.get(api, headers=bearer["teacher"]).status_code == 403
    polled = requests.get(api, headers=bearer["admin"]).json()
    assert (polled["state"], polled["step"], polled["total_steps"], polled["adapter"]) == (
        "training",
        5,
        20,
        adapter.name,
    )
    TrainingJob.objects.filter(pk=job.pk).update(state="cancelled")  # by its worker: one active job per course
    other = TrainingJob.objects.create(course=course)
    assert (
        requests.delete(f"{tool}/api/v1/course/training-jobs/{other.pk}/", headers=bearer["admin"]).json()["state"]
        == "cancelled"
    )

    # A job the gate evaluated: its numbers beside the chart, and the bar it had to reach drawn on it.
    ready = TrainingJob.objects.create(
        course=course,
        state="ready",
        step=4,
        total_steps=4,
        evaluation={
            "base_loss": 2.5,
            "active_loss": 2.0,
            "candidate_loss": 1.5,
            "gate": {"passed": True, "reasons": []},
        },
    )
    for step, loss, held_out in ((2, 2.2, 2.1), (4, 1.6, 1.5)):
        JobMetric.objects.create(job=ready, step=step, train_loss=loss, eval_loss=held_out)
    page = pages["admin"].get(url).text
    beside = page[page.index('class="chart-and-gate"') :]
    assert 'data-testid="gate-bar"' in beside and 'data-testid="gate"' in beside
    assert "The gate's bar: 1.96" in page  # 2% below the adapter in service's 2.0
