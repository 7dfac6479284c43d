"""LTI endpoints. Each view parses the request, calls one validation or service, renders."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from lti_tool.models import Key
from pylti1p3.contrib.django import DjangoOIDCLogin
from pylti1p3.exception import OIDCException

from lti import dynamic_registration
from lti.deep_linking import TutorLinkResource
from lti.frames import lms_frameable
from lti.launch import (
    DATA_PRIVACY_LAUNCH,
    DEEP_LINK_MAX_AGE_SECONDS,
    USED_CLAIMS,
    LaunchClaims,
    LaunchDataStorage,
    ToolConfig,
    TutorMessageLaunch,
    claims_only,
    launch_confirmed,
    launch_validate,
    refused,
    registration_state,
    restore_launch,
)
from lti.platform_storage import storage_state_issue, storage_ticket_mint, storage_ticket_redeem
from lti.services import tool_url, tool_urls
from tutor.landing import course_home
from tutor.models import Role
from tutor.services import course_enter, person_erase

DEEP_LINK_SALT = "lti.deep-link"
DATA_PRIVACY_SALT = "lti.data-privacy"
DATA_PRIVACY_MAX_AGE_SECONDS = 1800


@require_GET
def jwks(request: HttpRequest) -> JsonResponse:
    """The tool's public keys: the current one and those recently superseded."""
    return JsonResponse(Key.objects.as_jwks())


@csrf_exempt
@require_http_methods(["GET", "POST"])
@lms_frameable
def login(request: HttpRequest) -> HttpResponse:
    """OIDC third-party login initiation."""
    params = request.POST if request.method == "POST" else request.GET
    issuer, target = params.get("iss"), params.get("target_link_uri")
    if not issuer or not params.get("login_hint") or not target:
        raise refused("bad_login", "The LMS's login request is missing iss, login_hint or target_link_uri.", 400)
    if not target.startswith(settings.PUBLIC_BASE_URL + "/"):
        raise refused("bad_login", "The login request's target_link_uri is not an address of this tool.", 400)
    oidc = DjangoOIDCLogin(request, ToolConfig(), launch_data_storage=LaunchDataStorage())
    storage_target = params.get("lti_storage_target")
    try:
        if not storage_target:
            return oidc.redirect(tool_url("lti:launch"))
        # Platform Storage: the cookie pylti1p3 would set is dropped; the page stores state and nonce.
        auth_url = oidc.get_redirect_object(tool_url("lti:launch")).get_redirect_url()
    except OIDCException:
        state = registration_state(issuer, params.get("client_id"))
        if state == "pending":
            raise refused(
                "platform_pending", "This LMS's registration is waiting for the tutor's administrator to activate it."
            ) from None
        raise refused(
            "unknown_platform",
            "This LMS is not registered with the tutor. Ask your LMS administrator to register the tool.",
        ) from None
    query = {k: v[0] for k, v in parse_qs(urlsplit(auth_url).query).items()}
    auth = urlsplit(auth_url)
    record = storage_state_issue(
        state=query["state"],
        nonce=query["nonce"],
        target=storage_target,
        platform_origin=f"{auth.scheme}://{auth.netloc}",
    )
    return render(request, "lti/storage_login.html", {"storage": {**record, "auth_url": auth_url}})


@csrf_exempt
@require_POST
@lms_frameable
def launch(request: HttpRequest) -> HttpResponse:
    """The OIDC redirect URI: every LTI message launch arrives here."""
    message_launch, claims = launch_validate(request)
    if message_launch.storage_bound_state is not None:
        record = message_launch.storage_bound_state
        ticket = storage_ticket_mint(
            launch_id=claims.launch_id,
            state=record["state"],
            nonce=record["nonce"],
            claims=claims_only(claims.raw, USED_CLAIMS),
        )
        return render(request, "lti/storage_check.html", {"storage": {**record, "ticket": ticket}})
    return _launch_proceed(request, message_launch, claims)


@csrf_exempt  # no cookie to protect; the Origin header and the one-time ticket are checked instead
@require_POST
@lms_frameable
def launch_confirm(request: HttpRequest) -> HttpResponse:
    """Second step of a Platform Storage launch: the state and nonce read back from the platform."""
    redeemed = storage_ticket_redeem(
        request,
        ticket=request.POST.get("ticket", ""),
        state_value=request.POST.get("state", ""),
        nonce_value=request.POST.get("nonce", ""),
    )
    message_launch, claims = launch_confirmed(request, launch_id=redeemed.launch_id, body=redeemed.claims)
    return _launch_proceed(request, message_launch, claims)


def _launch_proceed(request: HttpRequest, message_launch: TutorMessageLaunch, claims: LaunchClaims) -> HttpResponse:
    if claims.message_type == "LtiResourceLinkRequest":
        entry = course_enter(
            **_course_fields(claims),
            resource_link_id=claims.resource_link_id,
            resource_link_title=claims.resource_link_title,
        )
        return course_home(request, entry=entry)
    if claims.message_type == "LtiDeepLinkingRequest":
        if claims.role == Role.STUDENT:
            raise refused("not_teacher", "Only the course's teachers can place the tutor in a course.")
        entry = course_enter(**_course_fields(claims))
        token = signing.dumps({"l": claims.launch_id, "m": entry.membership.id}, salt=DEEP_LINK_SALT)
        settings_claim = claims.raw.get("https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings", {})
        return render(
            request,
            "lti/deep_link.html",
            {
                "token": token,
                "course": entry.membership.course,
                "default_title": settings_claim.get("title") or settings.TOOL_TITLE,
            },
        )
    if claims.message_type == DATA_PRIVACY_LAUNCH:
        return _data_privacy_page(request, claims)
    raise refused(
        "unsupported_message",
        f"The tutor does not handle {claims.message_type or 'this kind of'} launch yet.",
        400,
    )


def _course_fields(claims: LaunchClaims) -> dict:
    return {
        "issuer": claims.issuer,
        "deployment_id": claims.deployment_id,
        "subject": claims.subject,
        "role": claims.role,
        "context_id": claims.context_id,
        "context_title": claims.context_title,
        "context_label": claims.context_label,
        "full_name": claims.full_name,
        "given_name": claims.given_name,
        "family_name": claims.family_name,
    }


def _data_privacy_page(request: HttpRequest, claims: LaunchClaims) -> HttpResponse:
    """LTI Data Privacy Launch: the LMS asks us to act on one user's data (for_user). A user may
    erase their own data; an administrator anyone's. The erasure waits for a confirmation."""
    for_user = claims.for_user_id or claims.subject
    own = for_user == claims.subject
    if not own and claims.role != Role.ADMIN:
        raise refused("not_admin", "Only an administrator can act on another person's data.")
    token = signing.dumps({"iss": claims.issuer, "sub": for_user}, salt=DATA_PRIVACY_SALT)
    return render(request, "lti/data_privacy.html", {"token": token, "own": own, "tool_title": settings.TOOL_TITLE})


@csrf_exempt  # authenticated by the signed token the privacy launch put in the form
@require_POST
@lms_frameable
def data_privacy_erase(request: HttpRequest) -> HttpResponse:
    """The confirmed erasure of a Data Privacy Launch."""
    try:
        payload = signing.loads(
            request.POST.get("token", ""), salt=DATA_PRIVACY_SALT, max_age=DATA_PRIVACY_MAX_AGE_SECONDS
        )
    except signing.BadSignature:
        raise refused("privacy_form_expired", "This form has expired. Start again from the LMS.") from None
    counts = person_erase(issuer=payload["iss"], subject=payload["sub"], via="lti_data_privacy")
    return render(
        request, "lti/data_privacy_done.html", {"found": counts is not None, "tool_title": settings.TOOL_TITLE}
    )


@csrf_exempt  # authenticated by the signed deep-link token in the form, not by a cookie
@require_POST
@lms_frameable
def deep_link_respond(request: HttpRequest) -> HttpResponse:
    """A teacher chose how to place the tutor: send the signed LtiDeepLinkingResponse back."""
    try:
        payload = signing.loads(request.POST.get("token", ""), salt=DEEP_LINK_SALT, max_age=DEEP_LINK_MAX_AGE_SECONDS)
    except signing.BadSignature:
        raise refused("deep_link_expired", "This placement form has expired. Start again from your course.") from None
    title = (request.POST.get("title") or settings.TOOL_TITLE).strip()[:255]
    message_launch, _claims = restore_launch(request, payload["l"])
    resource = TutorLinkResource().set_url(tool_url("lti:launch")).set_title(title)
    return HttpResponse(message_launch.get_deep_link().output_response_form([resource]))


@require_GET
def canvas_config(request: HttpRequest) -> JsonResponse:
    """Canvas developer key JSON (Admin → Developer Keys → + LTI Key → Paste JSON)."""
    urls = tool_urls()
    host = urlsplit(settings.PUBLIC_BASE_URL).hostname
    placement = {
        "text": settings.TOOL_TITLE,
        "enabled": True,
        "message_type": "LtiResourceLinkRequest",
        "target_link_uri": urls["target_link_uri"],
    }
    return JsonResponse(
        {
            "title": settings.TOOL_TITLE,
            "description": "An AI tutor for your course, trained on your teachers' corrections.",
            "oidc_initiation_url": urls["oidc_initiation_url"],
            "target_link_uri": urls["target_link_uri"],
            "public_jwk_url": urls["public_jwk_url"],
            "scopes": [],
            "extensions": [
                {
                    "domain": host,
                    "tool_id": "ai-tutor",
                    "platform": "canvas.instructure.com",
                    "privacy_level": "name_only",
                    "settings": {
                        "text": settings.TOOL_TITLE,
                        "placements": [
                            {**placement, "placement": "course_navigation", "default": "enabled"},
                            {
                                **placement,
                                "placement": "link_selection",
                                "message_type": "LtiDeepLinkingRequest",
                            },
                        ],
                    },
                }
            ],
            "custom_fields": {},
        }
    )


@require_GET
@lms_frameable
def register(request: HttpRequest) -> HttpResponse:
    """LTI Dynamic Registration: the LMS opens this URL with openid_configuration and registration_token."""
    result = dynamic_registration.registration_complete(
        openid_configuration_url=request.GET.get("openid_configuration", ""),
        registration_token=request.GET.get("registration_token"),
    )
    return render(request, "lti/registered.html", {"result": result})


def tool_configuration(request: HttpRequest) -> JsonResponse:
    """The URLs to paste into an LMS, as JSON (what `lti_add_platform` prints)."""
    return JsonResponse(tool_urls(), json_dumps_params={"indent": 2})
