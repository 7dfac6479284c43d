"""The administrator's path to training, in Chromium: launched from the development LMS in its
iframe, the landing shows the course's training (and updates it in place), then the training
page, in its own tab, follows a job without reloading: an open log stays open, a notice goes once
the state it spoke of has changed, Retrain looks disabled while a job runs, and a failed job's
reason is at the top. The jobs are rows moved by the test, as a worker would (no training here)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from serving.models import AdapterVersion
from tests.support.screens import lms_launch, screen_check
from training.jobs import job_fail, job_progress, job_stop
from training.models import TrainingJob
from tutor.models import Course

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

LOOK = """(selector) => {
  const style = getComputedStyle(document.querySelector(selector));
  return {opacity: style.opacity, cursor: style.cursor, background: style.backgroundColor};
}"""
OUT_OF_MEMORY = (
    "Out of memory: the training process reached 7.90 GiB, over this deployment's limit of 6.00 GiB "
    "(TRAINING_MEMORY_LIMIT_MB), and was stopped. Lower TRAINING_TOKENS_PER_STEP. Nothing was registered.\n"
    "step=3 loss=2.1"
)


def running_job(course: Course) -> TrainingJob:
    job = TrainingJob.objects.create(
        course=course, state="training", total_steps=20, started_at=timezone.now(), phase="training"
    )
    for step, loss, held_out in ((1, 2.6, None), (2, 2.3, 2.4), (3, 2.1, None), (4, 1.9, 2.1)):
        line = {"step": step, "max_steps": 20, "loss": loss, **({"eval_loss": held_out} if held_out else {})}
        job_progress(job_id=job.pk, line=line)
    return job


def test_admin_lands_on_training_and_the_training_page_follows_a_job_in_place(tool, devlms_page):
    page = devlms_page(tool)
    lms_launch(page, tool, user="admin")  # the course and its admin now exist
    course = Course.objects.get()
    adapter = AdapterVersion.objects.create(
        course=course, version=1, name=f"course-{course.pk}-v1", base_model="m", path="/x", status="active"
    )
    job = running_job(course)

    # The admin's launch shows the course's training where they land, updated in place.
    frame = lms_launch(page, tool, user="admin")
    panel = frame.locator("[data-testid=admin-training]")
    panel.get_by_text(f"Job {job.pk}: Training").wait_for()
    assert adapter.name in frame.locator("[data-testid=admin-serving]").inner_text()
    assert frame.locator("[data-testid=admin-progress-text]").inner_text().startswith("step 4 of 20")
    assert frame.locator("[data-testid=admin-retrain]").is_disabled()
    screen_check(page, frame, "admin-landing-training")
    frame.evaluate("window.stayed = 'landing'")
    job_progress(job_id=job.pk, line={"step": 8, "max_steps": 20, "loss": 1.7})
    frame.locator("[data-testid=admin-progress-text]", has_text="step 8 of 20").wait_for()
    assert frame.evaluate("[window.stayed, document.getElementById('admin-progress').value]") == ["landing", 8]

    # One click: the training page, in its own tab.
    with page.expect_popup() as opened:
        frame.locator("#training-link").click()
    training = opened.value
    training.set_default_timeout(20_000)
    training.get_by_role("heading", name=f"Job {job.pk}: Training").wait_for()

    chart = training.locator("[data-testid=loss-chart]")
    assert chart.locator("[data-testid=x-axis] text").count() >= 3
    assert chart.locator("[data-testid=y-axis] text").count() >= 3
    titles = [chart.locator(f"[data-testid={axis}-title]").text_content() for axis in ("x", "y")]
    assert titles == ["Training step", "Loss"]
    assert len(chart.locator("[data-testid=train-curve]").get_attribute("points").split()) == 5
    assert len(chart.locator("[data-testid=held-out-curve]").get_attribute("points").split()) == 2
    assert "2% below the adapter in service" in training.locator("[data-testid=gate-numbers]").inner_text()

    retrain = training.locator("[data-testid=retrain]")
    assert retrain.is_disabled()
    busy_look = training.evaluate(LOOK, "[data-testid=retrain]")
    training.locator("#job-log summary").click()
    training.evaluate("window.stayed = 'training page'")
    job_progress(job_id=job.pk, line={"step": 12, "max_steps": 20, "loss": 1.5, "eval_loss": 1.8})
    training.locator("[data-testid=step]", has_text="12").wait_for()
    assert training.evaluate(
        "[window.stayed, document.getElementById('job-log').open, document.getElementById('job-progress').value]"
    ) == ["training page", True, 12]
    assert "step=12" in training.locator("#job-log pre").inner_text()
    assert len(chart.locator("[data-testid=held-out-curve]").get_attribute("points").split()) == 3
    screen_check(training, None, "training-running")

    # Cancel: its notice stays while the job is still stopping, and goes once it has stopped.
    training.locator("[data-testid=cancel]").click()
    notice = training.locator("[data-testid=notice]", has_text="being cancelled")
    notice.wait_for()
    training.evaluate("window.stayed = 'after cancel'")
    training.locator("[data-testid=cancel]:text-is('Cancelling…')").wait_for()
    assert notice.count() == 1  # the state it told of has not changed yet
    job_stop(job_id=job.pk, to="cancelled", message="cancelled")
    training.locator("[data-testid=job-state]", has_text="Cancelled").wait_for()
    assert notice.count() == 0
    assert retrain.is_enabled()
    idle_look = training.evaluate(LOOK, "[data-testid=retrain]")
    assert idle_look != busy_look, (idle_look, busy_look)
    assert float(busy_look["opacity"]) < 1 and busy_look["cursor"] == "not-allowed"

    # A job started elsewhere (the schedule) shows up; when it fails, its reason is at the top.
    failing = TrainingJob.objects.create(course=course, state="training", total_steps=20, phase="training")
    training.get_by_role("heading", name=f"Job {failing.pk}: Training").wait_for(timeout=15_000)
    assert retrain.is_disabled()
    job_fail(job_id=failing.pk, error=OUT_OF_MEMORY)
    failure = training.locator("[data-testid=failure]")
    failure.wait_for()
    assert failure.locator("[data-testid=failure-reason]").inner_text() == OUT_OF_MEMORY.split("\n")[0]
    assert failure.bounding_box()["y"] < retrain.bounding_box()["y"]  # above everything else of the job
    assert training.evaluate("window.stayed") == "after cancel"
    screen_check(training, None, "training-failed")

    # Back on the landing (a fresh launch), the failure is told in the same plain words.
    frame = lms_launch(page, tool, user="admin")
    frame.locator("[data-testid=admin-failure]", has_text="Out of memory").wait_for()
    assert frame.locator("[data-testid=admin-retrain]").is_enabled()
    screen_check(page, frame, "admin-landing-failed")
