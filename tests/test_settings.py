"""Settings from the environment: production's `check --deploy` is clean, iframe cookies are
SameSite=None; Secure, values are read as written, and a bad one stops the start naming its variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.fast]

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings",
    "DJANGO_DEBUG": "0",
    "PUBLIC_BASE_URL": "https://tutor.school.edu",
    "SECRET_KEY": "k3y-" + "Zq8xW2vN5mR7tY1uI4oP6aS9dF0gH3jK" * 2,
    "PSEUDONYM_SECRET": "p" * 48,
    "DATABASE_URL": "sqlite:////tmp/never-opened.sqlite3",
}


def run_python(*args: str, env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DJANGO_DEBUG", "DEVLMS_ENABLED", "ALLOWED_HOSTS"}}
    return subprocess.run([sys.executable, *args], env={**clean, **env}, capture_output=True, text=True, cwd=ROOT)


def run_manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    return run_python("manage.py", *args, env=env)


def read_settings(names: list[str], env: dict) -> subprocess.CompletedProcess:
    """Imports the settings module alone (no Django setup, so quicker than manage.py) and prints the named settings."""
    code = f"import json, config.settings as s; print(json.dumps([getattr(s, name) for name in {names!r}]))"
    return run_python("-c", code, env={**PRODUCTION_ENV, **env})


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


def test_values_are_read_as_written():
    env = {
        "TRAINING_LEARNING_RATE": "1e-4",
        "ALLOWED_HOSTS": " a.school.edu , b.school.edu,,",
        "SECURE_SSL_REDIRECT": "",
        "REVIEW_SHOW_NAMES": "off",
        "DATABASE_URL": "postgres://tutor:p%40ss@db.school.edu:5432/tutor?sslmode=require",
        "DATABASE_CONN_MAX_AGE": "60",
    }
    result = read_settings(
        ["TRAINING_LEARNING_RATE", "ALLOWED_HOSTS", "SECURE_SSL_REDIRECT", "REVIEW_SHOW_NAMES", "DATABASES"], env
    )
    assert result.returncode == 0, result.stderr
    rate, hosts, ssl_redirect, show_names, databases = json.loads(result.stdout)
    assert rate == 1e-4
    assert hosts == ["tutor.school.edu", "a.school.edu", "b.school.edu"]
    assert ssl_redirect is True  # empty means the default
    assert show_names is False
    assert databases["default"] == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "tutor",
        "USER": "tutor",
        "PASSWORD": "p@ss",
        "HOST": "db.school.edu",
        "PORT": 5432,
        "OPTIONS": {"sslmode": "require"},
        "CONN_MAX_AGE": 60,
    }


def test_sqlite_takes_concurrent_writers():
    result = read_settings(["DATABASES"], {"DATABASE_SQLITE_TIMEOUT_SECONDS": "5"})
    assert result.returncode == 0, result.stderr
    (databases,) = json.loads(result.stdout)
    assert databases["default"]["NAME"] == "/tmp/never-opened.sqlite3"
    assert databases["default"]["OPTIONS"] == {
        "transaction_mode": "IMMEDIATE",
        "timeout": 5.0,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("VLLM_PORT", "80O1", "VLLM_PORT must be an integer, not '80O1'"),
        # django-environ alone would read this as 0.3 and a misspelt boolean as false.
        ("MODEL_TEMPERATURE", "0.3x", "MODEL_TEMPERATURE must be a number, not '0.3x'"),
        ("TRAINING_AUTO_PROMOTE", "ture", "TRAINING_AUTO_PROMOTE must be a boolean (1/0, true/false), not 'ture'"),
        ("SAFETY_REPLIES", "{'abuse': {}}", "SAFETY_REPLIES must be JSON"),
        ("PUBLIC_BASE_URL", "tutor.school.edu", "PUBLIC_BASE_URL must be an http(s) URL, not 'tutor.school.edu'"),
        ("PSEUDONYM_SECRET", "", "PSEUDONYM_SECRET must be set when DJANGO_DEBUG is off"),
    ],
)
def test_a_bad_value_is_a_clear_error(name, value, message):
    result = read_settings([], {name: value})
    assert result.returncode != 0
    assert f"django.core.exceptions.ImproperlyConfigured: {message}" in result.stderr


def test_a_bad_database_url_is_a_clear_error_without_its_password():
    result = read_settings([], {"DATABASE_URL": "postgress://tutor:hunter2@db.school.edu/tutor"})
    assert result.returncode != 0
    assert "ImproperlyConfigured: DATABASE_URL must be a database URL" in result.stderr
    assert "hunter2" not in result.stderr
