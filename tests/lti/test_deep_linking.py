"""Deep Linking 2.0: a teacher places the tutor; the response JWT verifies against our JWKS."""

from __future__ import annotations

import html
import re

import jwt
import pytest
import requests

from devlms import moodle
from tests.support.platform import TestPlatform
from tutor.models import Course, Placement

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

DL = "https://purl.imsglobal.org/spec/lti-dl/claim/"


def form_fields(page: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in re.findall(r'name="(\w+)" value="([^"]*)"', page)}


def test_teacher_places_the_tutor_and_the_platform_gets_a_signed_response(tool, platform: TestPlatform, browser):
    page = platform.launch(browser, tool, user="teacher", message_type="LtiDeepLinkingRequest")
    assert page.status_code == 200, page.text[:800]
    assert "Place the AI tutor in Biology 1" in page.text
    assert Course.objects.filter(lms_context_id="course-42").exists()
    assert not Placement.objects.exists()  # the placement appears when the link is first launched

    fields = form_fields(page.text)
    answer = requests.post(tool + "/lti/deep-link/", data={"token": fields["token"], "title": "Biology helper"})

    assert answer.status_code == 200
    action = re.search(r'action="([^"]+)"', answer.text).group(1)
    assert action == platform.issuer + "/deep-link-return"
    response_jwt = re.search(r'name="JWT" value="([^"]+)"', answer.text).group(1)
    signing_key = jwt.PyJWKClient(tool + "/lti/jwks/").get_signing_key_from_jwt(response_jwt)
    claims = jwt.decode(response_jwt, signing_key.key, algorithms=["RS256"], audience=platform.issuer)
    assert claims["iss"] == platform.client_id
    assert claims["https://purl.imsglobal.org/spec/lti/claim/message_type"] == "LtiDeepLinkingResponse"
    assert claims["https://purl.imsglobal.org/spec/lti/claim/deployment_id"] == platform.deployment_id
    (item,) = claims[DL + "content_items"]
    assert item["type"] == "ltiResourceLink"
    assert item["title"] == "Biology helper"
    assert item["url"] == tool + "/lti/launch/"
    # The opaque `data` of the request comes back untouched, as the spec requires.
    assert claims[DL + "data"].startswith("devlms-")
    # No empty members: Moodle 4.5 decodes the JWT into PHP arrays and re-encodes it, an empty
    # `custom` object comes back as [] and mod/lti/contentitem_return.php fails on it.
    assert {} not in item.values() and None not in item.values()
    (activity,) = moodle.deep_linking_response_activities(claims, tool_name="AI Tutor")[0]
    assert activity == moodle.Activity(name="Biology helper", tool_url=tool + "/lti/launch/")


def test_student_cannot_place_the_tutor(tool, platform: TestPlatform, browser):
    response = platform.launch(browser, tool, user="student", message_type="LtiDeepLinkingRequest")
    assert response.status_code == 403
    assert "not_teacher" in response.text


def test_deep_link_form_token_cannot_be_forged(tool, platform: TestPlatform):
    response = requests.post(tool + "/lti/deep-link/", data={"token": "forged", "title": "x"})
    assert response.status_code == 403
    assert "deep_link_expired" in response.text
