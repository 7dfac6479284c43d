"""Every forged or broken launch is refused with a 4xx page that says why, and stores nothing."""

from __future__ import annotations

import re
import time
import uuid

import pytest
import requests

from devlms.platform import LIS, DevUser, SigningKey
from tests.support.db import row_counts
from tests.support.platform import DROP, TestPlatform, hs256_with_public_key, unsigned

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]


def assert_refused(response: requests.Response, code: str, *, status_range=range(400, 500)) -> None:
    assert response.status_code in status_range, (response.status_code, response.text[:800])
    assert f'data-testid="error-code">{code}<' in response.text, response.text[:1500]
    message = re.search(r'data-testid="error-message">([^<]+)<', response.text)
    assert message and len(message.group(1)) > 20  # plain words, not a stack trace


def refuse_case(platform: TestPlatform, browser, tool, *, code: str, **launch_kwargs) -> None:
    before = row_counts()
    response = platform.launch(browser, tool, **launch_kwargs)
    assert_refused(response, code)
    assert row_counts() == before


def test_bad_signature(tool, platform, browser):
    impostor = SigningKey.generate()
    refuse_case(
        platform, browser, tool, code="bad_signature",
        id_token=lambda claims: impostor.sign(claims, headers={"kid": platform.keys[-1].jwk["kid"]}),
    )  # fmt: skip


def test_tampered_payload(tool, platform, browser):
    def tamper(claims):
        header, body, signature = platform.sign(claims).split(".")
        other = platform.sign({**claims, "sub": "someone-else"}).split(".")[1]
        return f"{header}.{other}.{signature}" if other != body else "x"

    refuse_case(platform, browser, tool, code="bad_signature", id_token=tamper)


def test_unknown_key(tool, platform, browser):
    stranger = SigningKey.generate()
    refuse_case(platform, browser, tool, code="unknown_key", id_token=lambda claims: stranger.sign(claims))


def test_alg_confusion_hs256_signed_with_public_key(tool, platform, browser):
    refuse_case(
        platform,
        browser,
        tool,
        code="bad_algorithm",
        id_token=lambda claims: hs256_with_public_key(claims, platform.keys[-1]),
    )


def test_alg_none(tool, platform, browser):
    refuse_case(
        platform, browser, tool, code="bad_algorithm", id_token=lambda claims: unsigned(claims, platform.keys[-1])
    )


def test_untrusted_extra_audience(tool, platform, browser):
    refuse_case(platform, browser, tool, code="bad_audience", aud=[platform.client_id, "some-other-tool"])


def test_several_audiences_without_azp(tool, platform, browser):
    refuse_case(platform, browser, tool, code="bad_audience", aud=[platform.client_id, "some-other-tool"], azp=DROP)


def test_azp_naming_another_client(tool, platform, browser):
    refuse_case(platform, browser, tool, code="bad_audience", azp="some-other-tool")


def test_audience_is_another_client(tool, platform, browser):
    refuse_case(platform, browser, tool, code="unknown_platform", aud="some-other-tool", azp=DROP)


def test_trusted_extra_audience_is_accepted(tool, platform, browser, settings):
    settings.LTI_TRUSTED_AUDIENCES = ["partner-service"]
    response = platform.launch(browser, tool, aud=[platform.client_id, "partner-service"])
    assert response.status_code == 200, response.text[:800]


def test_expired(tool, platform, browser):
    now = int(time.time())
    refuse_case(platform, browser, tool, code="expired", iat=now - 3600, exp=now - 1800)


def test_nonce_not_issued_by_us(tool, platform, browser):
    refuse_case(platform, browser, tool, code="bad_nonce", nonce=uuid.uuid4().hex)


def test_missing_nonce(tool, platform, browser):
    refuse_case(platform, browser, tool, code="bad_nonce", nonce=DROP)


def test_replayed_id_token(tool, platform, browser):
    auth = platform.login(browser, tool)
    token = platform.sign(platform.claims(nonce=auth["nonce"]))
    first = browser.post(auth["redirect_uri"], data={"id_token": token, "state": auth["state"]})
    assert first.status_code == 200
    before = row_counts()

    again = browser.post(auth["redirect_uri"], data={"id_token": token, "state": auth["state"]})

    assert_refused(again, "replayed")
    assert row_counts() == before


def test_state_not_bound_to_this_browser(tool, platform, browser):
    auth = platform.login(browser, tool)
    token = platform.sign(platform.claims(nonce=auth["nonce"]))
    before = row_counts()
    other_browser = requests.Session()  # has no state cookie

    response = other_browser.post(auth["redirect_uri"], data={"id_token": token, "state": auth["state"]})

    assert_refused(response, "state_mismatch")
    assert row_counts() == before


def test_state_of_another_login(tool, platform, browser):
    first = platform.login(browser, tool)
    second = platform.login(browser, tool)
    refuse_case(
        platform,
        browser,
        tool,
        code="state_mismatch",
        claims=platform.claims(nonce=second["nonce"]),
        state=first["state"] + "x",
    )


def test_missing_state(tool, platform, browser):
    auth = platform.login(browser, tool)
    token = platform.sign(platform.claims(nonce=auth["nonce"]))
    assert_refused(browser.post(auth["redirect_uri"], data={"id_token": token}), "state_missing")


def test_unknown_issuer(tool, platform, unregistered_platform, browser):
    # The unregistered platform cannot even start a login...
    params = {"iss": unregistered_platform.issuer, "login_hint": "x", "target_link_uri": tool + "/lti/launch/"}
    assert_refused(browser.get(tool + "/lti/login/", params=params, allow_redirects=False), "unknown_platform")
    # ...and a token it signs, posted with a state the tool did issue, is refused too.
    auth = platform.login(browser, tool)
    claims = unregistered_platform.claims(nonce=auth["nonce"])
    before = row_counts()
    response = browser.post(
        auth["redirect_uri"], data={"id_token": unregistered_platform.sign(claims), "state": auth["state"]}
    )
    assert_refused(response, "unknown_platform")
    assert row_counts() == before


def test_unknown_deployment_is_refused_and_not_created(tool, platform, browser):
    refuse_case(platform, browser, tool, code="unknown_deployment", lti_deployment_id="deployment-not-registered")


@pytest.mark.parametrize(
    ("claim", "value", "code"),
    [
        ("sub", DROP, "missing_claim"),
        ("lti_roles", DROP, "missing_claim"),
        ("lti_version", "1.1.0", "missing_claim"),
        ("lti_version", DROP, "missing_claim"),
        ("lti_message_type", DROP, "missing_claim"),
        ("lti_message_type", "LtiSomethingElse", "wrong_claim"),
        ("lti_resource_link", DROP, "missing_claim"),
        ("lti_resource_link", {"title": "no id"}, "missing_claim"),
        ("lti_context", DROP, "missing_claim"),
        ("lti_deployment_id", DROP, "missing_claim"),
        ("lti_resource_link", "not-an-object", "wrong_claim"),
    ],
)
def test_missing_or_wrong_lti_claims(tool, platform, browser, claim, value, code):
    refuse_case(platform, browser, tool, code=code, **{claim: value})


def test_role_without_access(tool, platform, browser):
    mentor = DevUser("mentor", "sub-mentor", "Mentor", (LIS + "membership#Mentor",))
    refuse_case(platform, browser, tool, code="no_access_role", user=mentor)


def test_malformed_and_missing_token(tool, platform, browser):
    auth = platform.login(browser, tool)
    assert_refused(
        browser.post(auth["redirect_uri"], data={"id_token": "abc.def", "state": auth["state"]}), "malformed_token"
    )
    assert_refused(browser.post(auth["redirect_uri"], data={"state": auth["state"]}), "missing_token")


def test_refusals_answer_json_when_asked(tool, platform, browser):
    auth = platform.login(browser, tool)
    response = browser.post(
        auth["redirect_uri"],
        data={"id_token": "abc.def", "state": auth["state"]},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_token"


@pytest.mark.parametrize(
    "overrides",
    [
        {"lti_context": "not-an-object"},
        {"lti_roles": "Learner"},
        {"aud": {"client": "x"}},
        {"nonce": 12345},
        {"exp": "tomorrow"},
        {"sub": 12345},
        {"lti_deployment_id": ["deployment-1"]},
        {"lti_deep_linking_settings": None, "lti_message_type": "LtiDeepLinkingRequest"},
    ],
    ids=lambda o: ",".join(o),
)
def test_claims_of_the_wrong_type_never_cause_a_500(tool, platform, browser, overrides):
    before = row_counts()
    response = platform.launch(browser, tool, **overrides)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert 'data-testid="error-code">' in response.text
    assert row_counts() == before
