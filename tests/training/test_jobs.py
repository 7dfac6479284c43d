"""Training jobs under failure: a worker killed mid-training leaves the job resumable and
nothing half-made registered or loaded; a duplicate delivery does nothing."""

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
from tests.support.training import corrected_course, wait_for
from training.jobs import job_decide, training_job_start
from training.models import TrainingJob
from training.tasks import train_adapter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.real_model]
LEASE = "12"


def test_killed_worker_leaves_a_resumable_job_and_no_partial_adapter(chat_tool, platform, vllm_url, settings):
    teacher, _ = corrected_course(platform, chat_tool)
    env = {"VLLM_BASE_URL": vllm_url, "TRAINING_LEASE_SECONDS": LEASE}
    overrides = {"max_steps": 12, "tokens_per_step": 256, "save_steps": 3, "rank": 4, "lora_alpha": 8}
    with celery_worker(
        database_url=database_url_for_tests(), broker_url=settings.CELERY_BROKER_URL, queues="gpu", extra_env=env
    ) as (_, worker):
        job = training_job_start(course=teacher.course, overrides=overrides)
        deadline = time.monotonic() + 300
        while not list(Path(job.work_dir, "checkpoints").glob("checkpoint-*/trainer_state.json")):
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.5)
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its training child, mid-training
        worker.wait()
    job.refresh_from_db()
    assert job.state == "training" and job.step < 12
    assert not AdapterVersion.objects.exists()
    assert not list(Path(job.work_dir).glob("adapter*"))  # nothing half-written under an adapter name
    served = {m["id"] for m in httpx.get(vllm_url + "/v1/models").json()["data"]}
    assert not [name for name in served if name.startswith(f"course-{teacher.course_id}-")]

    time.sleep(int(LEASE) + 1)  # the dead worker's lease runs out
    with celery_worker(
        database_url=database_url_for_tests(), broker_url=settings.CELERY_BROKER_URL, queues="gpu", extra_env=env
    ):
        train_adapter.delay(job.pk)  # what the broker redelivers: the unacknowledged task
        job = wait_for(job, {"promoted", "ready", "failed"})
        assert job.state in {"promoted", "ready"}, job.error
        assert job.attempts == 2, list(job.events.values_list("state", "message"))
        assert job.evaluation["train"]["resumed_from"].split("/")[-1].startswith("checkpoint-")
        assert job.events.filter(message="resumed after its worker stopped").exists()
        assert AdapterVersion.objects.count() == 1
        # A duplicate delivery of a finished job does nothing.
        assert train_adapter.delay(job.pk).get(timeout=60) == "skipped"
    assert TrainingJob.objects.get(pk=job.pk).attempts == 2


def test_worker_killed_after_training_resumes_at_the_evaluation_of_the_same_adapter(
    chat_tool, platform, vllm_url, settings
):
    teacher, _ = corrected_course(platform, chat_tool)
    env = {"VLLM_BASE_URL": vllm_url, "TRAINING_LEASE_SECONDS": LEASE}
    overrides = {"max_steps": 4, "tokens_per_step": 256, "rank": 4, "lora_alpha": 8}
    with celery_worker(
        database_url=database_url_for_tests(), broker_url=settings.CELERY_BROKER_URL, queues="gpu", extra_env=env
    ) as (_, worker):
        job = training_job_start(course=teacher.course, overrides=overrides)
        deadline = time.monotonic() + 300
        while not TrainingJob.objects.filter(pk=job.pk, adapter__isnull=False).exists():
            assert time.monotonic() < deadline, "no adapter was registered"
            time.sleep(0.1)
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its child, during the evaluation
        worker.wait()
    job.refresh_from_db()
    assert job.state == "evaluating", list(job.events.values_list("state", "message"))
    trained = job.adapter

    time.sleep(int(LEASE) + 1)
    with celery_worker(
        database_url=database_url_for_tests(), broker_url=settings.CELERY_BROKER_URL, queues="gpu", extra_env=env
    ):
        train_adapter.delay(job.pk)
        job = wait_for(job, {"promoted", "ready", "failed"})
    assert job.state in {"promoted", "ready"}, job.error
    # Not trained twice: the adapter the first attempt registered is the one evaluated and judged.
    assert AdapterVersion.objects.filter(course=teacher.course).count() == 1
    assert job.adapter_id == trained.pk == job.evaluation["adapter_id"]
    assert "candidate_loss" in job.evaluation
    assert job.events.filter(message__endswith="was trained before the worker stopped; evaluating it").exists()


def test_a_promotion_that_fails_leaves_the_adapter_for_an_admin_not_rejected(chat_tool, platform, vllm_url, settings):
    from django.db import connection

    from tests.support.proxy import model_server_proxy

    teacher, _ = corrected_course(platform, chat_tool)

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
        job = training_job_start(course=teacher.course, overrides={"max_steps": 2, "tokens_per_step": 256, "rank": 4})
        job = wait_for(job, {"promoted", "ready", "failed"})
    assert job.state == "ready", (job.state, job.error)
    assert "gate passed, but promoting failed" in job.events.last().message
    assert job.adapter.status == "candidate"
    # Once the model server is back (the test's own), an administrator promotes it.
    assert job_decide(course_id=job.course_id, job_id=job.pk, promote=True).state == "promoted"
    assert AdapterVersion.objects.get(pk=job.adapter_id).status == "active"
    assert job.adapter.name in {m["id"] for m in httpx.get(vllm_url + "/v1/models").json()["data"]}
