"""The development LMS launches the tool through the real OIDC flow, as in the demo."""

from __future__ import annotations

import html
import re

import jwt
import pytest
import requests
from django.core.management import call_command
from lti_tool.models import LtiRegistration
from pylti1p3.deep_link import DeepLink
from pylti1p3.deep_link_resource import DeepLinkResource

from devlms import platform
from tutor.models import Membership, Placement

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


@pytest.fixture
def devlms(tool):
    call_command("devlms_setup", stdout=None)
    return tool + "/devlms"


def follow_auto_post(browser: requests.Session, page: requests.Response) -> requests.Response:
    """What the auto-submitting form of the platform's page does in a browser."""
    action = html.unescape(re.search(r'<form id="post" method="post" action="([^"]+)"', page.text).group(1))
    fields = {k: html.unescape(v) for k, v in re.findall(r'name="(\w+)" value="([^"]*)"', page.text)}
    return browser.post(action, data=fields)


@pytest.mark.parametrize("user", ["student", "teacher", "admin"])
def test_devlms_launches_the_tool_as_each_role(devlms, user):
    browser = requests.Session()
    home = browser.get(devlms + "/")
    assert home.status_code == 200 and f"Launch as {user}" in home.text

    auth_page = browser.get(devlms + f"/start/?user={user}")  # → tool login → devlms auth
    assert auth_page.status_code == 200
    landed = follow_auto_post(browser, auth_page)

    assert landed.status_code == 200, landed.text[:800]
    assert f'data-testid="role">{user}<' in landed.text
    assert Membership.objects.get().role == user
    token = re.search(r'name="launch-token" content="([^"]+)"', landed.text).group(1)
    me = requests.get(devlms.rsplit("/devlms", 1)[0] + "/api/v1/me/", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["course"]["title"].startswith("Fractions and Ratios")


def test_devlms_deep_linking_adds_a_placement_that_then_launches(devlms):
    browser = requests.Session()
    page = follow_auto_post(browser, browser.get(devlms + "/start/?user=teacher&message=LtiDeepLinkingRequest"))
    assert "Place the AI tutor" in page.text
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
    response_form = browser.post(
        devlms.rsplit("/devlms", 1)[0] + "/lti/deep-link/", data={"token": token, "title": "Ratios helper"}
    )
    action = re.search(r'action="([^"]+)"', response_form.text).group(1)
    signed = re.search(r'name="JWT" value="([^"]+)"', response_form.text).group(1)

    (item,) = jwt.decode(signed, options={"verify_signature": False})[DL + "content_items"]
    assert item.get("custom", {"survives": "Moodle"}) != {}  # Moodle re-encodes {} as [] and fails

    done = browser.post(action, data={"JWT": signed})  # the dev LMS verifies it against the tool's JWKS

    assert done.status_code == 200, done.text[:500]
    assert 'data-testid="content-item">Ratios helper' in done.text
    home = browser.get(devlms + "/")
    link_id = re.search(r"start/\?user=student&(?:amp;)?link=(devlms-link-2)", home.text).group(1)
    landed = follow_auto_post(browser, browser.get(devlms + f"/start/?user=student&link={link_id}"))
    assert landed.status_code == 200
    assert Placement.objects.filter(title="Ratios helper", lms_resource_link_id=link_id).exists()


DL = "https://purl.imsglobal.org/spec/lti-dl/claim/"


def tool_signed_response(devlms: str, **item) -> str:
    """An LtiDeepLinkingResponse signed with the tool's real key by pylti1p3, items as given."""
    registration = LtiRegistration.objects.get(issuer=platform.issuer()).to_registration()
    deep_link = DeepLink(registration, platform.DEPLOYMENT_ID, {"deep_link_return_url": devlms + "/deep-link-return/"})
    message = deep_link.get_message_jwt([DeepLinkResource()])
    message[DL + "content_items"] = [
        {"type": "ltiResourceLink", "url": devlms.rsplit("/devlms", 1)[0] + "/lti/launch/", **item}
    ]
    return deep_link.encode_jwt(message)


def test_devlms_fails_like_moodle_on_an_empty_custom_object(devlms):
    browser = requests.Session()
    answer = browser.post(
        devlms + "/deep-link-return/", data={"JWT": tool_signed_response(devlms, title="T", custom={})}
    )

    assert answer.status_code == 404  # Moodle's fatal error page
    assert "params_to_string(): Argument #1 ($params) must be of type object, array given" in html.unescape(answer.text)
    assert "devlms-link-2" not in browser.get(devlms + "/").text  # no activity was created


def test_devlms_keeps_a_non_empty_custom_and_launches_the_new_link(devlms):
    browser = requests.Session()
    signed = tool_signed_response(devlms, title="Ratios", text="Ask about ratios", custom={"topic": "ratios"})
    done = browser.post(devlms + "/deep-link-return/", data={"JWT": signed})

    assert done.status_code == 200, done.text[:500]
    assert 'data-testid="content-item">Ratios: Ask about ratios' in done.text
    landed = follow_auto_post(browser, browser.get(devlms + "/start/?user=student&link=devlms-link-2"))
    assert landed.status_code == 200, landed.text[:500]
    assert Placement.objects.filter(title="Ratios", lms_resource_link_id="devlms-link-2").exists()


def test_devlms_refuses_a_forged_deep_linking_response(devlms):
    forged = jwt.encode({"iss": "devlms-tutor"}, "not-the-tool-key-" + "0" * 32, algorithm="HS256")
    response = requests.post(devlms + "/deep-link-return/", data={"JWT": forged})
    assert response.status_code == 400
