"""A fresh install on the embedded defaults: `manage.py migrate` alone prepares the database for
the first launch (the database cache's table included)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests

from tests.support.platform import TestPlatform
from tests.support.servers import ROOT, asgi_app

pytestmark = [pytest.mark.live]


def manage(*argv: str, env: dict) -> None:
    done = subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_migrate_alone_is_enough_for_the_first_launch(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    # No REDIS_URL: the cache is the database's, as on a fresh demo or small install.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": database_url, "REDIS_URL": ""}
    manage("migrate", "--no-input", env=env)
    platform = TestPlatform()
    try:
        manage(*platform.register_argv(), env=env)
        # A launch needs no model server (nothing listens on port 9).
        with asgi_app(vllm_url="http://127.0.0.1:9", database_url=database_url, redis_url="") as base:
            response = platform.launch(requests.Session(), base, user="teacher")
    finally:
        platform.stop()

    assert response.status_code == 200, response.text[:500]
    assert 'name="launch-token"' in response.text
