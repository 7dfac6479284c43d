"""Training jobs under failure: a worker killed mid-training leaves the job resumable and
nothing half-made registered or loaded, one killed during the evaluation leaves its adapter to be
evaluated, not trained again; a duplicate delivery does nothing; a failed promotion leaves the
adapter for an administrator."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from serving.models import AdapterVersion
from tests.support.db import database_url_for_tests
from tests.support.servers import celery_worker
from tests.support.training import corrected_course, wait_for, wait_for_lease_to_run_out
from training.jobs import job_decide, training_job_start
from training.models import TrainingJob
from training.tasks import train_adapter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.real_model]
# Short, so that a dead worker's lease runs out soon; renewed every LEASE/3 seconds while it lives.
LEASE = "6"
STEPS = 6


def killed(worker) -> None:
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its training child
    worker.wait()


def test_a_job_whose_worker_is_killed_mid_training_then_mid_evaluation_resumes_where_it_stopped_each_time(
    chat_tool, platform, vllm_url, settings
):
    """One job, two deaths of its worker: during the training (no partial adapter is left, the next
    attempt resumes from the last checkpoint), then just after the adapter was registered (the
    next attempt evaluates that adapter, it does not train again). A duplicate delivery of the
    finished job does nothing."""
    teacher, _ = corrected_course(platform, chat_tool, exchanges=20)
    env = {"VLLM_BASE_URL": vllm_url, "TRAINING_LEASE_SECONDS": LEASE}

    def gpu_worker():
        return celery_worker(
            database_url=database_url_for_tests(), broker_url=settings.CELERY_BROKER_URL, queues="gpu", extra_env=env
        )

    # Killed at the first checkpoint (step 2): two thirds of the steps are still to come.
    overrides = {"max_steps": STEPS, "tokens_per_step": 256, "save_steps": 2, "rank": 4, "lora_alpha": 8}
    with gpu_worker() as (_, worker):
        job = training_job_start(course=teacher.course, overrides=overrides)
        deadline = time.monotonic() + 300
        while not list(Path(job.work_dir, "checkpoints").glob("checkpoint-*/trainer_state.json")):
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.1)
        killed(worker)  # mid-training
    job.refresh_from_db()
    assert job.state == "training" and job.step < STEPS
    assert not AdapterVersion.objects.exists()
    assert not list(Path(job.work_dir).glob("adapter*"))  # nothing half-written under an adapter name
    served = {m["id"] for m in httpx.get(vllm_url + "/v1/models").json()["data"]}
    assert not [name for name in served if name.startswith(f"course-{teacher.course_id}-")]

    wait_for_lease_to_run_out(job)  # the dead worker's
    with gpu_worker() as (_, worker):
        train_adapter.delay(job.pk)  # what the broker redelivers: the unacknowledged task
        deadline = time.monotonic() + 300
        while not TrainingJob.objects.filter(pk=job.pk, adapter__isnull=False).exists():
            assert time.monotonic() < deadline, "no adapter was registered"
            time.sleep(0.1)
        killed(worker)  # during the evaluation
    job.refresh_from_db()
    assert job.state == "evaluating", list(job.events.values_list("state", "message"))
    assert job.events.filter(message="resumed after its worker stopped").exists()
    trained = job.adapter
    assert trained.metrics["resumed_from"].split("/")[-1].startswith("checkpoint-")
    assert trained.metrics["steps"] == STEPS

    wait_for_lease_to_run_out(job)
    with gpu_worker():
        train_adapter.delay(job.pk)
        job = wait_for(job, {"promoted", "ready", "failed"})
        assert job.state in {"promoted", "ready"}, job.error
        assert job.attempts == 3, list(job.events.values_list("state", "message"))
        # Not trained twice: the adapter the second attempt registered is the one evaluated and judged.
        assert AdapterVersion.objects.filter(course=teacher.course).count() == 1
        assert job.adapter_id == trained.pk == job.evaluation["adapter_id"]
        assert "candidate_loss" in job.evaluation
        assert job.evaluation["train"]["resumed_from"].split("/")[-1].startswith("checkpoint-")
        assert job.events.filter(message__endswith="was trained before the worker stopped; evaluating it").exists()
        # A duplicate delivery of a finished job does nothing.
        assert train_adapter.delay(job.pk).get(timeout=60) == "skipped"
    assert TrainingJob.objects.get(pk=job.pk).attempts == 3


def test_a_promotion_that_fails_leaves_the_adapter_for_an_admin_not_rejected(chat_tool, platform, vllm_url, settings):
    from django.db import connection

    from tests.support.proxy import model_server_proxy

    teacher, _ = corrected_course(platform, chat_tool, exchanges=20)

    def evaluated() -> bool:  # the child has recorded its evaluation: what follows is the promotion
        try:
            return TrainingJob.objects.filter(course=teacher.course, evaluation__has_key="replies").exists()
        finally:
            connection.close()

    # The worker's model server answers the evaluation, then goes down before the promotion; its
    # gate always passes.
    env = {"TRAINING_GATE_MARGIN": "-1", "TRAINING_GATE_CHRF_MARGIN": "-100"}
    with (
        model_server_proxy(upstream=vllm_url, down=evaluated) as proxy,
        celery_worker(
            database_url=database_url_for_tests(),
            broker_url=settings.CELERY_BROKER_URL,
            queues="gpu",
            extra_env={**env, "VLLM_BASE_URL": proxy},
        ),
    ):
        job = training_job_start(course=teacher.course, overrides={"max_steps": 1, "tokens_per_step": 256, "rank": 4})
        job = wait_for(job, {"promoted", "ready", "failed"})
    assert job.state == "ready", (job.state, job.error)
    assert "gate passed, but promoting failed" in job.events.last().message
    assert job.adapter.status == "candidate"
    # Once the model server is back (the test's own), an administrator promotes it.
    assert job_decide(course_id=job.course_id, job_id=job.pk, promote=True).state == "promoted"
    assert AdapterVersion.objects.get(pk=job.adapter_id).status == "active"
    assert job.adapter.name in {m["id"] for m in httpx.get(vllm_url + "/v1/models").json()["data"]}
