"""Key sets: the tool's JWKS and rotation; platforms' key sets cached and refetched on a new kid."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone
from lti_tool.models import Key

from devlms.platform import SigningKey
from tests.support.platform import TestPlatform

pytestmark = [pytest.mark.django_db(transaction=True)]


def jwks_kids(tool: str) -> list[str]:
    response = requests.get(tool + "/lti/jwks/")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert all(key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig" and "d" not in key for key in keys)
    return [key["kid"] for key in keys]


@pytest.mark.live
def test_rotation_publishes_the_new_key_and_keeps_the_old_one_for_a_while(tool, platform):
    (first,) = jwks_kids(tool)

    call_command("rotate_keys", stdout=StringIO())

    kids = jwks_kids(tool)
    assert first in kids and len(kids) == 2
    newest = Key.objects.order_by("-datetime_created").first()
    assert str(newest) in kids and str(newest) != first


@pytest.mark.live
def test_superseded_key_leaves_the_jwks_after_the_grace_period(tool, platform):
    (first,) = jwks_kids(tool)
    call_command("rotate_keys", stdout=StringIO())
    # Age both: the second key has now superseded the first for longer than the grace period.
    older, newer = Key.objects.order_by("datetime_created")
    Key.objects.filter(pk=older.pk).update(datetime_created=timezone.now() - timedelta(days=10))
    Key.objects.filter(pk=newer.pk).update(datetime_created=timezone.now() - timedelta(days=8))
    call_command("rotate_keys", stdout=StringIO())

    kids = jwks_kids(tool)
    assert first not in kids
    assert len(kids) == 2  # the key from the first rotation is still within its grace period


def test_rotation_with_zero_grace_keeps_only_the_newest():
    Key.objects.generate()
    call_command("rotate_keys", "--retire-after-days", "0", stdout=StringIO())
    assert Key.objects.active().count() == 1
    assert Key.objects.active().get() == Key.objects.order_by("-datetime_created").first()


@pytest.mark.live
def test_platform_key_rotation_is_followed_by_refetching_its_key_set(tool, platform: TestPlatform, settings):
    assert platform.launch(requests.Session(), tool).status_code == 200
    assert platform.recorded.keyset_fetches == 1
    assert platform.launch(requests.Session(), tool).status_code == 200
    assert platform.recorded.keyset_fetches == 1  # cached

    platform.rotate_key()
    settings.LTI_KEYSET_REFETCH_MIN_SECONDS = 0
    response = platform.launch(requests.Session(), tool)

    assert response.status_code == 200, response.text[:500]
    assert platform.recorded.keyset_fetches == 2


@pytest.mark.live
def test_a_forged_unknown_kid_does_not_delay_a_genuine_key_rotation(tool, platform: TestPlatform):
    assert platform.launch(requests.Session(), tool).status_code == 200
    forged = SigningKey.generate()  # a kid the platform never published
    refused = platform.launch(requests.Session(), tool, id_token=lambda claims: platform.sign(claims, key=forged))
    assert refused.status_code == 403 and "unknown_key" in refused.text
    assert platform.recorded.keyset_fetches == 2

    platform.rotate_key()  # moments later, the platform really rotates
    response = platform.launch(requests.Session(), tool)

    assert response.status_code == 200, response.text[:500]
    assert platform.recorded.keyset_fetches == 3


@pytest.mark.live
def test_an_unknown_kid_just_missed_does_not_hammer_the_platform(tool, platform: TestPlatform):
    assert platform.launch(requests.Session(), tool).status_code == 200
    forged = SigningKey.generate()
    for _ in range(3):
        response = platform.launch(requests.Session(), tool, id_token=lambda claims: platform.sign(claims, key=forged))
        assert response.status_code == 403 and "unknown_key" in response.text
    assert platform.recorded.keyset_fetches == 2  # one refetch for that kid, then none for a while


@pytest.mark.live
def test_unreachable_key_set_is_a_clear_502_not_a_500(tool, platform: TestPlatform):
    platform.stop()
    auth_browser = requests.Session()
    auth = platform.login(auth_browser, tool)
    token = platform.sign(platform.claims(nonce=auth["nonce"]))
    response = auth_browser.post(auth["redirect_uri"], data={"id_token": token, "state": auth["state"]})
    assert response.status_code == 502
    assert "platform_keys_unavailable" in response.text
