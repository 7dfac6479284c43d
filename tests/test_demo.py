"""`./run demo` brings the app up on embedded defaults (SQLite, no services) with the dev LMS,
and that default takes a class: 50 students chatting at once (issue 10, item 12)."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.live, pytest.mark.real_model]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CLEAN_ENV = {
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "VLLM_BASE_URL",
    "DJANGO_SETTINGS_MODULE",
    "SECRET_KEY",
    "PSEUDONYM_SECRET",
}


@dataclass
class Demo:
    base: str
    var: Path
    env: dict
    log: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`./run demo` as a user runs it, in a fresh var folder (replies kept short for two cores)."""
    var = tmp_path_factory.mktemp("demo-var")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env.update(DEMO_PORT=str(port), TUTOR_VAR_DIR=str(var), VLLM_PORT=str(free_port()), MODEL_MAX_REPLY_TOKENS="24")
    log = var.parent / (var.name + "-run.log")
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(ROOT / "run"), "demo"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # the demo starts vLLM first (about a minute)
            try:
                if requests.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail("the demo did not come up:\n" + log.read_text()[-3000:])
        yield Demo(base=base, var=var, env=env, log=log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def bearer(page_html: str) -> dict:
    return {"Authorization": "Bearer " + re.search(r'name="launch-token" content="([^"]+)"', page_html).group(1)}


def test_run_demo_serves_the_development_lms_and_a_launch_works(demo):
    base, tmp_path = demo.base, demo.var
    assert (tmp_path / "tutor.sqlite3").exists()  # embedded SQLite, no external database
    browser = requests.Session()
    auth_page = browser.get(base + "/devlms/start/?user=student")
    from tests.devlms.test_devlms import follow_auto_post

    landed = follow_auto_post(browser, auth_page)
    assert landed.status_code == 200
    assert 'data-testid="role">student<' in landed.text
    # ...and chat with the local model: a streamed reply arrives.
    auth = bearer(landed.text)
    conversation = requests.post(base + "/api/v1/conversations/", headers=auth).json()["id"]
    reply = requests.post(
        f"{base}/api/v1/conversations/{conversation}/messages/stream/", json={"content": "Hello!"}, headers=auth
    )
    assert reply.status_code == 200
    assert "event: token" in reply.text and "event: done" in reply.text
    # A real Celery worker runs beside it on Kombu's filesystem broker (no Redis, no RabbitMQ).
    for _ in range(120):
        if "ready." in (tmp_path / "worker.log").read_text():
            break
        time.sleep(0.5)
    worker_log = (tmp_path / "worker.log").read_text()
    assert "ready." in worker_log and "filesystem://" in worker_log, worker_log[-2000:]
    assert "training.tasks.train_adapter" in worker_log  # it serves the training queue too
    # The broker's files, its exchange tables included, stay in the demo's var folder.
    assert list((tmp_path / "celery" / "control").glob("*.exchange"))
    assert f"open {base}/devlms/" in demo.log.read_text()


def class_platform(demo: Demo):
    """An LTI platform of its own, registered in the demo's database as an administrator would."""
    from tests.support.platform import TestPlatform

    platform = TestPlatform(client_id="class-of-50")
    subprocess.run(
        [
            str(ROOT / "run"), "manage", "lti_add_platform",
            "--name", "Class platform",
            "--issuer", platform.issuer,
            "--client-id", platform.client_id,
            "--auth-login-url", platform.auth_login_url,
            "--auth-token-url", platform.token_url,
            "--keyset-url", platform.keyset_url,
            "--deployment-id", platform.deployment_id,
        ],
        env=demo.env, check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    return platform


def test_fifty_students_chat_at_once_on_the_embedded_default(demo):
    """A class of 50 launches and chats at the same moment: no 5xx, every message and reply stored."""
    from devlms.platform import LIS, DevUser

    platform = class_platform(demo)
    students = [
        DevUser(f"s{i}", f"class-student-{i}", f"Student {i}", (LIS + "membership#Learner",)) for i in range(50)
    ]
    start = threading.Barrier(len(students))

    def student_chats(index: int) -> tuple[list[int], str]:
        browser = requests.Session()
        start.wait()  # all at once: the launches race as well as the chats
        landed = platform.launch(browser, demo.base, user=students[index])
        if landed.status_code != 200:
            return [landed.status_code], landed.text[:300]
        auth = bearer(landed.text)
        conversation = requests.post(demo.base + "/api/v1/conversations/", headers=auth)
        if conversation.status_code != 201:
            return [landed.status_code, conversation.status_code], conversation.text[:300]
        reply = requests.post(
            f"{demo.base}/api/v1/conversations/{conversation.json()['id']}/messages/stream/",
            json={"content": f"What is {index} + {index}? 🙂"},
            headers=auth,
            timeout=600,
        )
        return [landed.status_code, conversation.status_code, reply.status_code], reply.text

    try:
        with ThreadPoolExecutor(len(students)) as pool:
            results = list(pool.map(student_chats, range(len(students))))
    finally:
        platform.stop()
    failures = [(codes, text[:300]) for codes, text in results if codes != [200, 201, 200] or "event: done" not in text]
    assert not failures, failures[:5]

    with sqlite3.connect(f"file:{demo.var / 'tutor.sqlite3'}?mode=ro", uri=True) as db:
        stored = dict(
            db.execute(
                "SELECT m.sender, count(*) FROM tutor_message m JOIN tutor_conversation c ON c.id = m.conversation_id "
                "JOIN tutor_person p ON p.id = c.person_id JOIN tutor_course k ON k.id = c.course_id "
                "WHERE m.status = 'complete' AND k.title = 'Biology 1' GROUP BY m.sender"
            ).fetchall()
        )
    assert stored == {"user": 50, "assistant": 50}


def test_a_database_that_stays_locked_answers_in_json_with_a_retry(demo):
    """Past the busy timeout, the error contract answers (503 `database_busy`, retry), not an HTML 500;
    once the lock is gone the same request succeeds. A second web process on the demo's database
    with a short timeout keeps the test quick; it shares the demo's var folder (and so its keys)."""
    from tests.devlms.test_devlms import follow_auto_post
    from tests.support.servers import spawn, stop, wait_until_up

    browser = requests.Session()
    landed = follow_auto_post(browser, browser.get(demo.base + "/devlms/start/?user=student"))
    auth = bearer(landed.text)
    conversation = requests.post(demo.base + "/api/v1/conversations/", headers=auth).json()["id"]

    port = free_port()
    env = {**demo.env, "DJANGO_DEBUG": "1", "DATABASE_SQLITE_TIMEOUT_SECONDS": "0.5"}
    env["VLLM_BASE_URL"] = f"http://127.0.0.1:{env['VLLM_PORT']}"
    process, log = spawn(
        [str(ROOT / ".venv/bin/uvicorn"), "config.asgi:application", "--host", "127.0.0.1", "--port", str(port)],
        env,
        "busy-app-",
    )
    other = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(other + "/healthz", process, log, timeout=120)
        lock = sqlite3.connect(demo.var / "tutor.sqlite3", timeout=30, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # another writer holds the database
        try:
            busy = requests.post(
                f"{other}/api/v1/conversations/{conversation}/messages/", json={"content": "Still there?"}, headers=auth
            )
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert busy.status_code == 503, busy.text[:500]
        assert busy.headers["Content-Type"] == "application/json"
        assert busy.headers["Retry-After"] == "2"
        error = busy.json()["error"]
        assert error["code"] == "database_busy" and error["detail"]["retry"] is True

        again = requests.post(
            f"{other}/api/v1/conversations/{conversation}/messages/", json={"content": "Still there?"}, headers=auth
        )
        assert again.status_code == 201, again.text[:500]
    finally:
        stop(process)


def demo_ask(demo: Demo, auth: dict) -> tuple[str, str]:
    """A new conversation's question and who answered: the model vLLM reports, and the words."""
    conversation = requests.post(demo.base + "/api/v1/conversations/", headers=auth).json()["id"]
    sent = requests.post(
        f"{demo.base}/api/v1/conversations/{conversation}/messages/",
        json={"content": "What is 2 plus 3?"},
        headers=auth,
        timeout=300,
    )
    assert sent.status_code == 201, sent.text[:500]
    with sqlite3.connect(f"file:{demo.var / 'tutor.sqlite3'}?mode=ro", uri=True) as db:
        model, content = db.execute(
            "SELECT model_name, content FROM tutor_message WHERE id = ?", (sent.json()["reply"]["id"],)
        ).fetchone()
    return model, " ".join(sorted(set(content.split())))


def test_a_killed_model_server_comes_back_with_the_course_adapter(demo, demo_model, tmp_path):
    """Issue 14: the demo's model server dies; `./run demo` restarts it, says so, loads the course's
    adapter into it again, and the next chat is answered by that adapter."""
    from devlms.platform import COURSE
    from tests.devlms.test_devlms import follow_auto_post
    from tests.support.models import word_adapter

    browser = requests.Session()
    auth = bearer(follow_auto_post(browser, browser.get(demo.base + "/devlms/start/?user=student")).text)
    with sqlite3.connect(f"file:{demo.var / 'tutor.sqlite3'}?mode=ro", uri=True) as db:
        (course_id,) = db.execute(
            "SELECT id FROM tutor_course WHERE lms_issuer = ? AND lms_context_id = ?",
            (demo.base + "/devlms", COURSE["id"]),
        ).fetchone()
    # The course's adapter, promoted as an administrator would (it answers in " cat" and " dog" only).
    folder = word_adapter(tmp_path / "cat-dog", base_model=demo_model, words=(" cat", " dog"))
    promote = (
        "from serving.adapters import adapter_promote, adapter_register\n"
        f"adapter = adapter_register(course_id={course_id}, path={str(folder)!r}, base_model={str(demo_model)!r})\n"
        "print(adapter_promote(adapter=adapter).name)\n"
    )
    promoted = subprocess.run(
        [str(ROOT / "run"), "manage", "shell", "-c", promote],
        env=demo.env, cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    name = promoted.stdout.strip().splitlines()[-1]
    assert demo_ask(demo, auth) == (name, "cat dog")
    model_server = f"http://127.0.0.1:{demo.env['VLLM_PORT']}"
    report = requests.get(demo.base + "/health/", timeout=60).json()["components"]
    assert report["replicas"][model_server] == {"status": "ok", "adapters": [name]}
    assert report["workers"]["status"] == "ok", report["workers"]  # the demo's worker serves both queues

    pid = int((demo.var / "vllm.pid").read_text())
    os.kill(pid, signal.SIGKILL)  # the model server dies (as when its engine dies, vLLM exits)
    deadline = time.monotonic() + 60
    while (replica := requests.get(demo.base + "/health/", timeout=60).json()["components"]["replicas"])[model_server][
        "status"
    ] == "ok":
        assert time.monotonic() < deadline, "the health endpoint still reports the dead model server up"
        time.sleep(0.5)
    # Refused, cut as it died, or (once the new vLLM holds its port while it loads) not answering yet.
    assert replica[model_server]["reason"] in {
        "nothing answers there (connection refused)",
        "the connection was cut (stopping or starting)",
        "no answer within 2 s",
    }, replica

    port = demo.env["VLLM_PORT"]
    for waited, seconds in ((f"model server back on port {port} (restart 1)", 600), (f"loaded: {name}", 60)):
        deadline = time.monotonic() + seconds
        while waited not in demo.log.read_text():
            assert time.monotonic() < deadline, f"no {waited!r} in the demo's output:\n" + demo.log.read_text()[-3000:]
            time.sleep(1)
    log = demo.log.read_text()
    assert re.search(rf"the model server on port {port} exited.*; restarting it \(restart 1", log)
    assert f"adapters reload: loaded: {name}" in log
    assert int((demo.var / "vllm.pid").read_text()) != pid
    # The adapter is in the new server before any chat asks for it, and it answers the next chat.
    assert name in {model["id"] for model in requests.get(model_server + "/v1/models").json()["data"]}
    assert demo_ask(demo, auth) == (name, "cat dog")
