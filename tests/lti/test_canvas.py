"""Canvas developer key JSON configuration."""

import pytest
from django.test import Client

pytestmark = [pytest.mark.django_db]


def test_canvas_developer_key_json(settings):
    settings.PUBLIC_BASE_URL = "https://tutor.school.edu"
    config = Client().get("/lti/canvas.json").json()
    assert config["oidc_initiation_url"] == "https://tutor.school.edu/lti/login/"
    assert config["target_link_uri"] == "https://tutor.school.edu/lti/launch/"
    assert config["public_jwk_url"] == "https://tutor.school.edu/lti/jwks/"
    (extension,) = config["extensions"]
    assert extension["platform"] == "canvas.instructure.com"
    assert extension["domain"] == "tutor.school.edu"
    placements = {p["placement"]: p for p in extension["settings"]["placements"]}
    assert placements["course_navigation"]["message_type"] == "LtiResourceLinkRequest"
    assert placements["link_selection"]["message_type"] == "LtiDeepLinkingRequest"
    assert all(p["target_link_uri"] == "https://tutor.school.edu/lti/launch/" for p in placements.values())
