"""LTI Dynamic Registration against a Moodle-shaped platform: pending until activated."""

from __future__ import annotations

from io import StringIO
from urllib.parse import urlencode

import pytest
import requests
from django.core.management import call_command
from lti_tool.models import LtiDeployment, LtiRegistration

from tests.support.platform import TestPlatform

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

TOOL_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-tool-configuration"


@pytest.fixture
def moodle(tool):
    platform = TestPlatform(client_id="moodle-client-xyz", deployment_id="7")
    yield platform
    platform.stop()


def open_registration(tool: str, platform: TestPlatform, token: str | None = None) -> requests.Response:
    params = {
        "openid_configuration": platform.issuer + "/.well-known/openid-configuration",
        "registration_token": token or platform.registration_token,
    }
    return requests.get(tool + "/lti/register/?" + urlencode(params))


def test_moodle_flow_registers_the_tool_pending_until_activated(tool, moodle: TestPlatform):
    page = open_registration(tool, moodle)

    assert page.status_code == 200, page.text[:800]
    assert 'postMessage({subject: "org.imsglobal.lti.close"}' in page.text
    assert "pending" in page.text
    # What the tool sent to Moodle's registration endpoint.
    (post,) = moodle.recorded.registration_posts
    assert post["headers"]["Authorization"] == f"Bearer {moodle.registration_token}"
    body = post["body"]
    assert body["initiate_login_uri"] == tool + "/lti/login/"
    assert body["redirect_uris"] == [tool + "/lti/launch/"]
    assert body["jwks_uri"] == tool + "/lti/jwks/"
    assert body["token_endpoint_auth_method"] == "private_key_jwt"
    assert body["response_types"] == ["id_token"]
    message_types = [m["type"] for m in body[TOOL_CONFIGURATION]["messages"]]
    assert message_types == ["LtiResourceLinkRequest", "LtiDeepLinkingRequest"]
    # What the tool recorded: Moodle's client id and deployment, inactive.
    registration = LtiRegistration.objects.get(issuer=moodle.issuer)
    assert registration.client_id == "moodle-client-xyz"
    assert registration.keyset_url == moodle.keyset_url
    assert registration.auth_url == moodle.auth_login_url
    assert not registration.is_active
    assert LtiDeployment.objects.get(registration=registration).deployment_id == "7"

    # Until the tool's administrator activates it, launches are refused...
    params = {
        "iss": moodle.issuer,
        "login_hint": "x",
        "target_link_uri": tool + "/lti/launch/",
        "client_id": moodle.client_id,
    }
    pending = requests.get(tool + "/lti/login/", params=params, allow_redirects=False)
    assert pending.status_code == 403 and "platform_pending" in pending.text

    # ...and after activation they work.
    out = StringIO()
    call_command("lti_platforms", "--activate", str(registration.id), stdout=out)
    assert "Activated" in out.getvalue()
    response = moodle.launch(requests.Session(), tool, user="student")
    assert response.status_code == 200, response.text[:800]


def test_registration_with_a_bad_token_is_refused_by_the_platform_and_stores_nothing(tool, moodle):
    page = open_registration(tool, moodle, token="wrong-token")
    assert page.status_code == 502
    assert "registration_failed" in page.text
    assert not LtiRegistration.objects.exists()


def test_openid_configuration_from_another_host_than_its_issuer_is_refused(tool, moodle):
    moodle.openid_issuer_override = "https://elsewhere.example"
    page = open_registration(tool, moodle)
    assert page.status_code == 400
    assert "issuer on another host" in page.text
    assert not moodle.recorded.registration_posts
    assert not LtiRegistration.objects.exists()


def test_registration_page_without_parameters_explains_itself(tool):
    page = requests.get(tool + "/lti/register/")
    assert page.status_code == 400
    assert "openid_configuration" in page.text


def test_platform_answer_without_deployment_is_refused(tool, moodle):
    moodle.registration_answer = {"client_id": "abc"}
    page = open_registration(tool, moodle)
    assert page.status_code == 502
    assert not LtiRegistration.objects.exists()


def test_dynamic_registration_can_be_turned_off(tool, moodle, settings):
    settings.LTI_DYNAMIC_REGISTRATION_ENABLED = False
    page = open_registration(tool, moodle)
    assert page.status_code == 403
    assert not moodle.recorded.registration_posts


def test_canvas_style_message_list_without_deep_linking_is_respected(tool, moodle):
    config = moodle.openid_configuration()
    platform_config = config["https://purl.imsglobal.org/spec/lti-platform-configuration"]
    platform_config["messages_supported"] = [{"type": "LtiResourceLinkRequest"}]
    from lti.dynamic_registration import client_registration_request

    request = client_registration_request(platform_config=config)
    assert [m["type"] for m in request[TOOL_CONFIGURATION]["messages"]] == ["LtiResourceLinkRequest"]
