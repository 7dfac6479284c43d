"""Production settings: `check --deploy` is clean, and iframe cookies are SameSite=None; Secure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.fast]

PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings",
    "DJANGO_DEBUG": "0",
    "PUBLIC_BASE_URL": "https://tutor.school.edu",
    "SECRET_KEY": "k3y-" + "Zq8xW2vN5mR7tY1uI4oP6aS9dF0gH3jK" * 2,
    "PSEUDONYM_SECRET": "p" * 48,
    "DATABASE_URL": "sqlite:////tmp/never-opened.sqlite3",
}


def run_manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DJANGO_DEBUG", "DEVLMS_ENABLED", "ALLOWED_HOSTS"}}
    return subprocess.run([sys.executable, "manage.py", *args], env={**clean, **env}, capture_output=True, text=True)


def test_check_deploy_reports_nothing_with_production_settings():
    result = run_manage("check", "--deploy", "--fail-level", "DEBUG", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_production_cookie_and_devlms_settings():
    code = (
        "import json; from django.conf import settings as s; "
        "print(json.dumps([s.SESSION_COOKIE_SAMESITE, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SAMESITE, "
        "s.CSRF_COOKIE_SECURE, s.DEVLMS_ENABLED, 'devlms' in s.INSTALLED_APPS, s.ALLOWED_HOSTS]))"
    )
    result = run_manage("shell", "--no-imports", "-c", code, env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["None", True, "None", True, False, False, ["tutor.school.edu"]]


def test_missing_secret_in_production_is_a_clear_error():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    result = run_manage("check", env={**env, "SECRET_KEY": ""})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr
