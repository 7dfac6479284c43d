"""Hot-swap under load: while 20 students chat continuously, new adapter versions are promoted
and the oldest unloaded; no request fails, and every reply after a switch comes from the new
version: vLLM says so (the model it reports, which the reply records), and so do the reply's
words (each version answers with words of its own, so a reply shows which weights wrote it)."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest
import requests

from devlms.platform import LIS, DevUser
from serving.adapters import adapter_promote, adapter_register
from tests.support.models import word_adapter
from tutor.models import Course, Message

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live, pytest.mark.real_model]
STUDENTS = 20
WORDS = {"v1": (" cherry", " plum"), "v2": (" cat", " dog"), "v3": (" left", " right")}


def served(vllm_url: str) -> set[str]:
    return {m["id"] for m in httpx.get(vllm_url + "/v1/models").json()["data"]}


def test_promotions_under_load_drop_nothing(
    chat_tool, platform, vllm_url, demo_model, tmp_path, settings, celery_worker_log
):
    settings.MODEL_REPLY_TIMEOUT_SECONDS = 120  # 20 streams with LoRA on two CPU cores are slow
    # The product's default grace, the reply timeout: no reply still running on a retired version
    # can lose it, however loaded the machine (60 s let two replies fail on a busy CI machine).
    settings.ADAPTER_RETIRE_GRACE_SECONDS = settings.MODEL_REPLY_TIMEOUT_SECONDS
    settings.MODEL_MAX_REPLY_TOKENS = 24  # these adapters never stop by themselves

    tokens = []
    for index in range(STUDENTS):
        user = DevUser(f"s{index}", f"load-student-{index}", f"Student {index}", (LIS + "membership#Learner",))
        page = platform.launch(requests.Session(), chat_tool, user=user).text
        tokens.append(re.search(r'name="launch-token" content="([^"]+)"', page).group(1))
    course_id = Course.objects.get().pk
    v1, v2, v3 = (
        adapter_register(
            course_id=course_id,
            path=word_adapter(tmp_path / v, base_model=demo_model, words=words),
            base_model=str(demo_model),
        )
        for v, words in WORDS.items()
    )
    words_of = {adapter.name: {word.strip() for word in WORDS[f"v{adapter.version}"]} for adapter in (v1, v2, v3)}
    adapter_promote(adapter=v1)

    results: list[tuple[float, float, int, int | None]] = []  # (started, answered, status, reply id)
    stop = threading.Event()

    def student(token: str) -> None:
        auth = {"Authorization": f"Bearer {token}"}
        while not stop.is_set():
            # A new conversation each time: no reply sees an earlier version's words in its history.
            conversation = requests.post(chat_tool + "/api/v1/conversations/", headers=auth).json()["id"]
            started = time.monotonic()
            response = requests.post(
                f"{chat_tool}/api/v1/conversations/{conversation}/messages/",
                json={"content": "What is 2 plus 3?"},
                headers=auth,
                timeout=120,
            )
            reply = response.json().get("reply", {}).get("id") if response.status_code == 201 else None
            results.append((started, time.monotonic(), response.status_code, reply))

    def answered_since(moment: float, count: int = 3) -> None:
        """Waits until `count` requests that started after `moment` are answered: on a loaded
        machine one reply can take longer than any fixed pause (an 8 s one saw none start)."""
        deadline = time.monotonic() + 240
        while sum(started > moment for started, *_ in list(results)) < count:
            assert time.monotonic() < deadline, f"fewer than {count} replies in 240 s"
            time.sleep(0.5)

    threads = [threading.Thread(target=student, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    try:
        answered_since(0)
        adapter_promote(adapter=v2)
        switched_v2 = time.monotonic()
        answered_since(switched_v2)
        promoting_v3 = time.monotonic()
        adapter_promote(adapter=v3)  # v1 is retired now and unloaded after the grace period
        switched_v3 = time.monotonic()
        answered_since(switched_v3)
        deadline = time.monotonic() + settings.ADAPTER_RETIRE_GRACE_SECONDS + 60
        while v1.name in served(vllm_url) and time.monotonic() < deadline:
            time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert results and all(status == 201 for *_, status, _ in results), [s for *_, s, _ in results if s != 201]
    replies = {
        pk: (model, content)
        for pk, model, content in Message.objects.filter(pk__in=[r for *_, r in results]).values_list(
            "pk", "model_name", "content"
        )
    }
    # What vLLM says answered: the version that served when the app took the request. The app
    # takes it after the client sent it, so a request sent before a switch can be served by the
    # new version, never one sent after it by the old: v2 from its switch until v3's began...
    between = [replies[r] for started, answered, _, r in results if started > switched_v2 and answered < promoting_v3]
    assert between and {model for model, _ in between} == {v2.name}
    after_v2 = [replies[r] for started, _, _, r in results if started > switched_v2]
    assert {model for model, _ in after_v2} <= {v2.name, v3.name}
    # ... and v3 alone once it serves.
    after_v3 = [replies[r] for started, _, _, r in results if started > switched_v3]
    assert after_v3 and {model for model, _ in after_v3} == {v3.name}
    # ... and what the words say: every reply is in the words of the version vLLM names (v1's
    # before the first switch), so the weights that served it are that version's.
    for model, content in replies.values():
        assert content.split() and set(content.split()) <= words_of[model], (model, content)
    assert v1.name not in served(vllm_url) and {v2.name, v3.name} <= served(vllm_url)
    assert "serving.tasks.adapters_unload" in celery_worker_log.read_text()  # unloaded by the worker
    assert all(m.status == "complete" for m in Message.objects.filter(pk__in=replies))
