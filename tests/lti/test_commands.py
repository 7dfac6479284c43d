"""`lti_add_platform`: the exact command-line interface admins and checks script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from lti_tool.models import Key, LtiDeployment, LtiRegistration

pytestmark = [pytest.mark.django_db]

ARGS = [
    "--name", "Moodle at school",
    "--issuer", "https://moodle.school.edu",
    "--client-id", "abc123",
    "--auth-login-url", "https://moodle.school.edu/mod/lti/auth.php",
    "--auth-token-url", "https://moodle.school.edu/mod/lti/token.php",
    "--keyset-url", "https://moodle.school.edu/mod/lti/certs.php",
    "--deployment-id", "3",
]  # fmt: skip


def add_platform(*args: str) -> dict:
    out = StringIO()
    call_command("lti_add_platform", *args, stdout=out)
    return json.loads(out.getvalue())


def test_prints_the_tool_urls_built_from_public_base_url(settings):
    settings.PUBLIC_BASE_URL = "https://tutor.school.edu"
    output = add_platform(*ARGS)
    assert output["oidc_initiation_url"] == "https://tutor.school.edu/lti/login/"
    assert output["target_link_uri"] == "https://tutor.school.edu/lti/launch/"
    assert output["public_jwk_url"] == "https://tutor.school.edu/lti/jwks/"
    assert output["created"] is True
    registration = LtiRegistration.objects.get()
    assert (registration.issuer, registration.client_id, registration.is_active) == (
        "https://moodle.school.edu",
        "abc123",
        True,
    )
    assert registration.keyset_url == "https://moodle.school.edu/mod/lti/certs.php"
    deployment = LtiDeployment.objects.get()
    assert (deployment.deployment_id, deployment.is_active) == ("3", True)
    assert Key.objects.active().count() == 1  # the tool has a key to publish


def test_running_twice_updates_and_never_duplicates():
    add_platform(*ARGS)
    args = list(ARGS)
    args[args.index("--name") + 1] = "Moodle (renamed)"
    args[args.index("--keyset-url") + 1] = "https://moodle.school.edu/keys-v2"
    output = add_platform(*args)
    assert output["created"] is False
    registration = LtiRegistration.objects.get()
    assert registration.name == "Moodle (renamed)"
    assert registration.keyset_url == "https://moodle.school.edu/keys-v2"
    assert LtiDeployment.objects.count() == 1
    assert Key.objects.count() == 1


def test_a_second_deployment_of_the_same_registration_is_added():
    add_platform(*ARGS)
    args = list(ARGS)
    args[args.index("--deployment-id") + 1] = "4"
    add_platform(*args)
    assert LtiRegistration.objects.count() == 1
    assert sorted(LtiDeployment.objects.values_list("deployment_id", flat=True)) == ["3", "4"]


def test_bad_urls_are_refused_with_a_clear_error():
    args = list(ARGS)
    args[args.index("--keyset-url") + 1] = "not a url"
    with pytest.raises(CommandError, match="keyset-url"):
        add_platform(*args)
    assert not LtiRegistration.objects.exists()


def test_real_command_line_prints_json_on_stdout(tmp_path):
    """Through `python manage.py`, as an admin runs it (on a throwaway SQLite database)."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}",
        "PUBLIC_BASE_URL": "https://tutor.example.org",
        "REDIS_URL": "",
        "SECRET_KEY": "x" * 60,
        "PSEUDONYM_SECRET": "y" * 40,
        "DJANGO_DEBUG": "0",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], env=env, check=True)
    result = subprocess.run(
        [sys.executable, "manage.py", "lti_add_platform", *ARGS], env=env, capture_output=True, text=True, check=True
    )
    output = json.loads(result.stdout)
    assert output["oidc_initiation_url"] == "https://tutor.example.org/lti/login/"
    assert output["public_jwk_url"] == "https://tutor.example.org/lti/jwks/"
