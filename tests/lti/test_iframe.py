"""Living in the LMS iframe: framing policy, third-party cookies, Platform Storage."""

from __future__ import annotations

import html
import json
import re

import pytest
import requests
from django.test import Client

from tests.support.platform import TestPlatform
from tutor.models import Membership

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def test_launched_page_may_be_framed_by_registered_platforms_only(tool, platform: TestPlatform, browser, settings):
    settings.LTI_EXTRA_FRAME_ANCESTORS = ["https://school.instructure.com"]
    response = platform.launch(browser, tool)

    assert response.status_code == 200
    assert "X-Frame-Options" not in response.headers
    policy = response.headers["Content-Security-Policy"]
    assert policy.startswith("frame-ancestors 'self' ")
    ancestors = policy.split()[1:]
    assert platform.issuer in ancestors
    assert "https://school.instructure.com" in ancestors
    assert "*" not in ancestors and "https:" not in ancestors
    assert "no-store" in response.headers["Cache-Control"]  # the page carries a launch token


def test_refusal_pages_in_the_iframe_are_framable_too(tool, platform: TestPlatform, browser):
    response = platform.launch(browser, tool, nonce="not-issued")
    assert response.status_code == 403
    assert platform.issuer in response.headers["Content-Security-Policy"]


def test_pages_not_meant_for_the_iframe_deny_framing(tool):
    response = requests.get(tool + "/admin/login/")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors" not in response.headers.get("Content-Security-Policy", "")


def test_over_https_the_oidc_state_cookie_is_samesite_none_and_secure(tool, platform: TestPlatform):
    client = Client()
    response = client.get(
        "/lti/login/",
        {
            "iss": platform.issuer,
            "login_hint": "x",
            "target_link_uri": tool + "/lti/launch/",
            "client_id": platform.client_id,
        },
        secure=True,
    )
    assert response.status_code == 302
    state_cookies = [morsel for name, morsel in response.cookies.items() if name.startswith("lti1p3-state-")]
    assert state_cookies, response.cookies
    for morsel in state_cookies:
        assert morsel["samesite"] == "None"
        assert morsel["secure"] is True
        assert morsel["httponly"] is True


def test_over_plain_http_cookies_stay_lax_usable(tool, platform: TestPlatform, browser):
    response = browser.get(
        tool + "/lti/login/",
        params={"iss": platform.issuer, "login_hint": "x", "target_link_uri": tool + "/lti/launch/"},
        allow_redirects=False,
    )
    assert response.status_code == 302
    assert "Secure" not in response.headers["Set-Cookie"]


def test_login_refuses_a_target_link_uri_that_is_not_this_tool(tool, platform: TestPlatform, browser):
    response = browser.get(
        tool + "/lti/login/",
        params={"iss": platform.issuer, "login_hint": "x", "target_link_uri": "https://evil.example/steal"},
        allow_redirects=False,
    )
    assert response.status_code == 400
    assert "bad_login" in response.text


# -- LTI Platform Storage ------------------------------------------------------------------------


def storage_login(platform: TestPlatform, tool: str, browser: requests.Session) -> dict:
    response = browser.get(
        tool + "/lti/login/",
        params={
            "iss": platform.issuer,
            "login_hint": "x",
            "target_link_uri": tool + "/lti/launch/",
            "client_id": platform.client_id,
            "lti_storage_target": "post_message_forwarding",
        },
        allow_redirects=False,
    )
    assert response.status_code == 200, response.text[:500]
    assert "Set-Cookie" not in response.headers  # state and nonce go to the platform, not to a cookie
    config = json.loads(
        html.unescape(re.search(r'id="lti-storage" type="application/json">(.+?)</script>', response.text).group(1))
    )
    assert config["target"] == "post_message_forwarding"
    assert config["origin"] == platform.issuer  # postMessage goes to the platform's OIDC endpoint origin
    assert config["auth_url"].startswith(platform.auth_login_url + "?")
    assert "lti.put_data" in response.text
    return config


def storage_launch(platform, tool, config, *, browser=None) -> tuple[requests.Response, dict]:
    """The platform posts the launch; the tool answers with the storage-check page."""
    token = platform.sign(platform.claims(nonce=config["nonce"]))
    response = (browser or requests.Session()).post(
        tool + "/lti/launch/",
        data={"id_token": token, "state": config["state"], "lti_storage_target": config["target"]},
    )
    assert response.status_code == 200, response.text[:800]
    assert "lti.get_data" in response.text
    check = json.loads(
        html.unescape(re.search(r'id="lti-storage" type="application/json">(.+?)</script>', response.text).group(1))
    )
    return response, check


def test_platform_storage_launch_works_without_any_cookie(tool, platform: TestPlatform):
    config = storage_login(platform, tool, requests.Session())
    _, check = storage_launch(platform, tool, config)
    assert not Membership.objects.exists()  # nothing recorded before the browser proved it holds the state

    # What the page's script does after lti.get_data returned the stored values:
    confirmed = requests.post(
        tool + "/lti/launch/confirm/",
        data={"ticket": check["ticket"], "state": config["state"], "nonce": config["nonce"]},
        headers={"Origin": tool},
    )

    assert confirmed.status_code == 200, confirmed.text[:800]
    assert 'data-testid="role">student<' in confirmed.text
    assert Membership.objects.count() == 1


def test_platform_storage_values_from_another_browser_are_refused(tool, platform: TestPlatform):
    config = storage_login(platform, tool, requests.Session())
    _, check = storage_launch(platform, tool, config)
    response = requests.post(
        tool + "/lti/launch/confirm/",
        data={"ticket": check["ticket"], "state": "state-of-someone-else", "nonce": config["nonce"]},
        headers={"Origin": tool},
    )
    assert response.status_code == 403 and "storage_check_failed" in response.text
    assert not Membership.objects.exists()


def test_platform_storage_confirm_from_another_site_is_refused(tool, platform: TestPlatform):
    config = storage_login(platform, tool, requests.Session())
    _, check = storage_launch(platform, tool, config)
    response = requests.post(
        tool + "/lti/launch/confirm/",
        data={"ticket": check["ticket"], "state": config["state"], "nonce": config["nonce"]},
        headers={"Origin": "https://attacker.example"},
    )
    assert response.status_code == 403
    assert not Membership.objects.exists()


def test_platform_storage_ticket_is_single_use(tool, platform: TestPlatform):
    config = storage_login(platform, tool, requests.Session())
    _, check = storage_launch(platform, tool, config)
    data = {"ticket": check["ticket"], "state": config["state"], "nonce": config["nonce"]}
    assert requests.post(tool + "/lti/launch/confirm/", data=data, headers={"Origin": tool}).status_code == 200
    again = requests.post(tool + "/lti/launch/confirm/", data=data, headers={"Origin": tool})
    assert again.status_code == 403 and "already been used" in again.text
    assert Membership.objects.count() == 1
