"""LTI Dynamic Registration (1EdTech LTI-DR 1.0), as Moodle 4.x drives it.

The LMS opens `/lti/register/?openid_configuration=URL&registration_token=JWT`.
We fetch the platform's openid configuration, POST our client registration to
its `registration_endpoint` (with the token as Bearer), and record the returned
client id and deployment id. The registration arrives **inactive**: anyone can
open this URL, so a platform is trusted only once the tutor's administrator
activates it (`python manage.py lti_platforms --activate ID` or the admin site).
Moodle, for its part, lists the tool as pending until its own admin activates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings

from lti.launch import DATA_PRIVACY_LAUNCH
from lti.services import platform_register, tool_urls
from tutor.errors import DomainError

TOOL_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-tool-configuration"
PLATFORM_CONFIGURATION = "https://purl.imsglobal.org/spec/lti-platform-configuration"


class RegistrationFailed(DomainError):
    code = "registration_failed"
    status = 400
    title = "The tutor could not be registered"


@dataclass(frozen=True)
class RegistrationResult:
    registration_id: int
    platform_name: str
    issuer: str
    client_id: str
    deployment_id: str


def _fetch_json(method: str, url: str, **kwargs) -> dict:
    try:
        response = requests.request(method, url, timeout=settings.LTI_HTTP_TIMEOUT_SECONDS, **kwargs)
    except requests.RequestException as exc:
        raise RegistrationFailed(f"The LMS could not be reached at {url}.", status=502) from exc
    if response.status_code >= 400:
        raise RegistrationFailed(
            f"The LMS refused the registration ({response.status_code}): {response.text[:300]}", status=502
        )
    try:
        data = response.json()
    except ValueError as exc:
        raise RegistrationFailed(f"The LMS answered {url} with something that is not JSON.", status=502) from exc
    if not isinstance(data, dict):
        raise RegistrationFailed(f"The LMS answered {url} with JSON that is not an object.", status=502)
    return data


def client_registration_request(*, platform_config: dict) -> dict:
    """Our OpenID Connect client registration, with the LTI tool configuration."""
    urls = tool_urls()
    # Moodle lists message types as strings, Canvas as {"type": ...} objects.
    supported = {
        message.get("type") if isinstance(message, dict) else message
        for message in platform_config.get(PLATFORM_CONFIGURATION, {}).get("messages_supported", [])
    }
    messages = [
        {"type": "LtiResourceLinkRequest", "target_link_uri": urls["target_link_uri"], "label": settings.TOOL_TITLE}
    ]
    if not supported or "LtiDeepLinkingRequest" in supported:
        messages.append(
            {
                "type": "LtiDeepLinkingRequest",
                "target_link_uri": urls["deep_linking_url"],
                "label": settings.TOOL_TITLE,
                "placements": ["ContentArea"],
                "supported_types": ["ltiResourceLink"],
            }
        )
    if DATA_PRIVACY_LAUNCH in supported:
        messages.append({"type": DATA_PRIVACY_LAUNCH, "target_link_uri": urls["target_link_uri"]})
    return {
        "application_type": "web",
        "response_types": ["id_token"],
        "grant_types": ["implicit", "client_credentials"],
        "initiate_login_uri": urls["oidc_initiation_url"],
        "redirect_uris": urls["redirect_uris"],
        "client_name": settings.TOOL_TITLE,
        "jwks_uri": urls["public_jwk_url"],
        "token_endpoint_auth_method": "private_key_jwt",
        "scope": "",
        TOOL_CONFIGURATION: {
            "domain": urlsplit(settings.PUBLIC_BASE_URL).netloc,
            "description": "An AI tutor for your course, trained on your teachers' corrections.",
            "target_link_uri": urls["target_link_uri"],
            "claims": ["iss", "sub", "name", "given_name", "family_name"],
            "messages": messages,
        },
    }


def registration_complete(*, openid_configuration_url: str, registration_token: str | None) -> RegistrationResult:
    if not settings.LTI_DYNAMIC_REGISTRATION_ENABLED:
        raise RegistrationFailed(
            "Dynamic registration is turned off on this tutor; register the LMS manually.", status=403
        )
    if urlsplit(openid_configuration_url).scheme not in {"http", "https"}:
        raise RegistrationFailed(
            "Open this page from your LMS's dynamic registration: the openid_configuration parameter is missing."
        )
    config = _fetch_json("GET", openid_configuration_url)
    issuer = config.get("issuer")
    missing = [
        key
        for key in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "registration_endpoint")
        if not config.get(key)
    ]
    if missing:
        raise RegistrationFailed(f"The LMS's openid configuration lacks {', '.join(missing)}.")
    # The configuration must come from the issuer's own host (LTI-DR §3.5.1).
    if urlsplit(issuer).netloc != urlsplit(openid_configuration_url).netloc:
        raise RegistrationFailed(
            "The LMS's openid configuration names an issuer on another host than the one it was fetched from."
        )
    headers = {"Authorization": f"Bearer {registration_token}"} if registration_token else {}
    answer = _fetch_json(
        "POST",
        config["registration_endpoint"],
        json=client_registration_request(platform_config=config),
        headers=headers,
    )
    client_id = answer.get("client_id")
    deployment_id = (answer.get(TOOL_CONFIGURATION) or {}).get("deployment_id")
    if not client_id or not deployment_id:
        raise RegistrationFailed(
            "The LMS accepted the registration but returned no client id or deployment id.", status=502
        )
    platform = config.get(PLATFORM_CONFIGURATION, {})
    name = f"{platform.get('product_family_code') or 'LMS'} at {urlsplit(issuer).netloc}"
    registered = platform_register(
        name=name,
        issuer=issuer,
        client_id=str(client_id),
        auth_login_url=config["authorization_endpoint"],
        auth_token_url=config["token_endpoint"],
        keyset_url=config["jwks_uri"],
        deployment_id=str(deployment_id),
        active=False,
    )
    return RegistrationResult(
        registration_id=registered.registration.id,
        platform_name=name,
        issuer=issuer,
        client_id=str(client_id),
        deployment_id=str(deployment_id),
    )
