"""Rollback, also of a course's first adapter: the base model serves the course again, by the
command and by the admin page's button; the rolled-back adapter is unloaded after the grace period."""

from __future__ import annotations

import re
import time
from io import StringIO

import httpx
import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from serving.adapters import adapter_register, adapter_rollback
from serving.client import AdapterError, model_for_course
from serving.models import AdapterVersion
from serving.selectors import active_adapter_name
from tests.support.chat import member
from tests.support.models import word_adapter
from tests.support.review import review_enter
from tutor.models import Course, Message, Role


def adapter(course, status: str, version: int = 1) -> AdapterVersion:
    return AdapterVersion.objects.create(
        course=course, version=version, name=f"course-{course.pk}-v{version}", path="/nowhere", status=status
    )


@pytest.mark.django_db
@pytest.mark.fast
def test_rolling_back_a_first_adapter_retires_it_and_the_base_model_serves(
    settings, django_capture_on_commit_callbacks
):
    course = member("t1", role=Role.TEACHER).course
    first = adapter(course, "active")
    assert model_for_course(course_id=course.pk) == first.name

    with django_capture_on_commit_callbacks() as unloads:
        assert adapter_rollback(course_id=course.pk) is None
    first.refresh_from_db()
    assert first.status == "retired"
    assert active_adapter_name(course_id=course.pk) is None
    assert model_for_course(course_id=course.pk) == settings.MODEL_SERVED_NAME == "base"
    assert len(unloads) == 1  # unloaded from vLLM after the grace period

    with pytest.raises(AdapterError, match="no adapter in service"):
        adapter_rollback(course_id=course.pk)


@pytest.mark.django_db
@pytest.mark.fast
def test_a_rollback_for_an_adapter_no_longer_active_does_nothing(django_capture_on_commit_callbacks):
    """The admin page names the adapter it saw serving: a button pressed twice rolls back once."""
    course = member("t1", role=Role.TEACHER).course
    retired, serving = adapter(course, "retired", 1), adapter(course, "active", 2)
    with django_capture_on_commit_callbacks() as unloads, pytest.raises(AdapterError, match="serves the course by now"):
        adapter_rollback(course_id=course.pk, active_id=retired.pk)
    assert AdapterVersion.objects.get(pk=serving.pk).status == "active" and not unloads


@pytest.mark.django_db
@pytest.mark.fast
def test_the_command_says_what_serves_the_course_after_a_rollback(django_capture_on_commit_callbacks):
    course = member("t1", role=Role.TEACHER).course
    adapter(course, "active")
    out = StringIO()
    with django_capture_on_commit_callbacks():
        call_command("adapters", "rollback", "--course", str(course.pk), stdout=out)
    assert f"course {course.pk} is now served by the base model" in out.getvalue()
    with pytest.raises(CommandError, match="no adapter in service: the base model serves it already"):
        call_command("adapters", "rollback", "--course", str(course.pk))


# -- through the real vLLM server ------------------------------------------------------------------


def served(vllm_url: str) -> set[str]:
    return {m["id"] for m in httpx.get(vllm_url + "/v1/models").json()["data"]}


def wait_until_unloaded(vllm_url: str, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while name in served(vllm_url):
        assert time.monotonic() < deadline, f"{name} was not unloaded"
        time.sleep(0.5)


def launch_token(platform, tool: str, user: str, browser: requests.Session | None = None) -> str:
    page = platform.launch(browser or requests.Session(), tool, user=user).text
    return re.search(r'name="launch-token" content="([^"]+)"', page).group(1)


CAT_DOG, LEFT_RIGHT = (" cat", " dog"), (" left", " right")  # the words of this test's two adapters


def reply_model(tool: str, auth: dict) -> tuple[str, str]:
    """Who wrote the reply to a new conversation's question: the model vLLM says answered, and
    whose words the reply is in ("cat dog", "left right", or "other" words: the base model's)."""
    conversation = requests.post(tool + "/api/v1/conversations/", headers=auth).json()["id"]
    sent = requests.post(
        f"{tool}/api/v1/conversations/{conversation}/messages/", json={"content": "What is 2 plus 3?"}, headers=auth
    )
    assert sent.status_code == 201, sent.text
    reply = Message.objects.get(pk=sent.json()["reply"]["id"])
    words = set(reply.content.split())
    for vocabulary in (CAT_DOG, LEFT_RIGHT):
        if words and words <= {word.strip() for word in vocabulary}:
            return reply.model_name, "".join(vocabulary).strip()
    return reply.model_name, "other"


@pytest.mark.django_db(transaction=True)
@pytest.mark.live
@pytest.mark.real_model
def test_rollback_of_a_first_adapter_serves_the_base_model_through_vllm(
    chat_tool, platform, vllm_url, demo_model, tmp_path, settings, celery_worker_log
):
    settings.ADAPTER_RETIRE_GRACE_SECONDS = 1  # no reply is running on it here
    settings.MODEL_MAX_REPLY_TOKENS = 16  # the adapters here never stop by themselves
    auth = {"Authorization": f"Bearer {launch_token(platform, chat_tool, 'student')}"}
    course = Course.objects.get()
    first = adapter_register(
        course_id=course.pk,
        path=word_adapter(tmp_path / "a1", base_model=demo_model, words=CAT_DOG),
        base_model=str(demo_model),
    )
    call_command("adapters", "promote", "--course", str(course.pk))  # the course's first adapter
    assert reply_model(chat_tool, auth) == (first.name, "cat dog")

    out = StringIO()
    call_command("adapters", "rollback", "--course", str(course.pk), stdout=out)
    assert f"course {course.pk} is now served by the base model" in out.getvalue()
    assert reply_model(chat_tool, auth) == ("base", "other")
    assert AdapterVersion.objects.get(pk=first.pk).status == "retired"
    wait_until_unloaded(vllm_url, first.name)  # by the worker, after the grace period
    assert "serving.tasks.adapters_unload" in celery_worker_log.read_text()

    # The admin page's button does the same (offered for a first adapter too).
    call_command("adapters", "promote", "--course", str(course.pk), "--adapter-version", "1")
    assert reply_model(chat_tool, auth) == (first.name, "cat dog")
    admin = requests.Session()
    review_enter(admin, chat_tool, launch_token(platform, chat_tool, "admin", admin))
    page_url = f"{chat_tool}/review/{course.pk}/training/"
    page = admin.get(page_url).text
    assert f"Roll back {first.name} to the base model" in page
    pressed = admin.post(
        f"{chat_tool}/review/{course.pk}/training/action/",
        data={"action": "rollback", "adapter": first.pk, "csrfmiddlewaretoken": admin.cookies["csrftoken"]},
        headers={"Referer": page_url},
    )
    assert pressed.status_code == 200 and "Rolled back: the base model serves the course now." in pressed.text
    assert 'data-testid="rollback"' not in pressed.text and "served by the base model" in pressed.text
    assert reply_model(chat_tool, auth) == ("base", "other")
    wait_until_unloaded(vllm_url, first.name)

    # With a previous version, a rollback makes it serve again (it stayed loaded for that).
    second = adapter_register(
        course_id=course.pk,
        path=word_adapter(tmp_path / "a2", base_model=demo_model, words=LEFT_RIGHT),
        base_model=str(demo_model),
    )
    call_command("adapters", "promote", "--course", str(course.pk), "--adapter-version", "1")
    call_command("adapters", "promote", "--course", str(course.pk), "--adapter-version", "2")
    assert reply_model(chat_tool, auth) == (second.name, "left right")
    assert f"Roll back {second.name} to v1" in admin.get(page_url).text
    out = StringIO()
    call_command("adapters", "rollback", "--course", str(course.pk), stdout=out)
    assert f"course {course.pk} is now served by {first.name}" in out.getvalue()
    assert reply_model(chat_tool, auth) == (first.name, "cat dog")
    assert AdapterVersion.objects.get(pk=second.pk).status == "retired"
    wait_until_unloaded(vllm_url, second.name)
    assert first.name in served(vllm_url)
