"""deploy/start-web.sh serves the app with production settings behind a TLS proxy."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.test_demo import free_port

pytestmark = [pytest.mark.live]

ROOT = Path(__file__).resolve().parent.parent


def test_start_web_serves_production_settings(tmp_path):
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "DEVLMS_ENABLED", "ALLOWED_HOSTS"}
    }
    env.update(
        DJANGO_DEBUG="0",
        PUBLIC_BASE_URL="https://tutor.school.edu",
        SECRET_KEY="s" * 60,
        PSEUDONYM_SECRET="p" * 40,
        DATABASE_URL=f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        REDIS_URL="",
        STATIC_ROOT=str(tmp_path / "static"),
        TRUST_X_FORWARDED_PROTO="1",
        WEB_PORT=str(port),
        WEB_WORKERS="1",
        PYTHON=str(ROOT / ".venv/bin/python"),
    )
    process = subprocess.Popen(
        [str(ROOT / "deploy/start-web.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    headers = {"Host": "tutor.school.edu", "X-Forwarded-Proto": "https"}
    try:
        for _ in range(120):
            try:
                health = requests.get(f"http://127.0.0.1:{port}/healthz", headers=headers, timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail("start-web.sh did not come up")
        assert health.status_code == 200
        jwks = requests.get(f"http://127.0.0.1:{port}/lti/jwks/", headers=headers)
        assert jwks.status_code == 200 and jwks.json() == {"keys": []}
        # No development LMS in production, and plain http is redirected to https.
        assert requests.get(f"http://127.0.0.1:{port}/devlms/", headers=headers).status_code == 404
        insecure = requests.get(
            f"http://127.0.0.1:{port}/healthz", headers={"Host": "tutor.school.edu"}, allow_redirects=False
        )
        assert insecure.status_code == 301 and insecure.headers["Location"].startswith("https://tutor.school.edu/")
        assert (tmp_path / "static" / "admin").is_dir()  # collectstatic ran
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)
