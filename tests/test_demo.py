"""`./run demo` brings the app up on embedded defaults (SQLite, no services) with the dev LMS."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

pytestmark = [pytest.mark.live, pytest.mark.real_model]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_run_demo_serves_the_development_lms_and_a_launch_works(tmp_path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "CELERY_BROKER_URL",
            "CELERY_RESULT_BACKEND",
            "VLLM_BASE_URL",
            "DJANGO_SETTINGS_MODULE",
            "SECRET_KEY",
            "PSEUDONYM_SECRET",
        }
    }
    env.update(DEMO_PORT=str(port), TUTOR_VAR_DIR=str(tmp_path), VLLM_PORT=str(free_port()))
    process = subprocess.Popen(
        [str(ROOT / "run"), "demo"],
        env=env,
        stdout=subprocess.PIPE,
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
            pytest.fail("the demo did not come up")
        assert (tmp_path / "tutor.sqlite3").exists()  # embedded SQLite, no external database
        browser = requests.Session()
        auth_page = browser.get(base + "/devlms/start/?user=student")
        from tests.devlms.test_devlms import follow_auto_post

        landed = follow_auto_post(browser, auth_page)
        assert landed.status_code == 200
        assert 'data-testid="role">student<' in landed.text
        # ...and chat with the local model: a streamed reply arrives.
        import re

        auth = {"Authorization": "Bearer " + re.search(r'name="launch-token" content="([^"]+)"', landed.text).group(1)}
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
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert f"open {base}/devlms/" in output
