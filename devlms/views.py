"""The development LMS's pages and platform endpoints."""

from __future__ import annotations

from urllib.parse import urlencode

import jwt
from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from devlms import moodle, outbox, platform
from lti.launch import DATA_PRIVACY_LAUNCH
from lti.services import tool_url

HINT_SALT = "devlms.message-hint"
MESSAGE_TYPES = {"LtiResourceLinkRequest", "LtiDeepLinkingRequest", DATA_PRIVACY_LAUNCH}

# The launch buttons open the tool in the home page's iframe: the platform's pages that the
# launch passes through (start, auth, deep-link return) are framed by the home page, same origin.
# The home page itself keeps the site-wide X-Frame-Options: DENY.


def _links(request: HttpRequest) -> list[dict]:
    return [platform.DEFAULT_LINK, *request.session.get("devlms_links", [])]


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "devlms/home.html",
        {
            "users": platform.USERS.values(),
            "links": _links(request),
            "course": platform.COURSE,
            "issuer": platform.issuer(),
            "privacy_message": DATA_PRIVACY_LAUNCH,
            "student": platform.USERS["student"],
        },
    )


@require_GET
def outbox_page(request: HttpRequest) -> HttpResponse:
    """The emails the tutor sent (safety alerts), as the demo's file backend wrote them."""
    return render(
        request,
        "devlms/outbox.html",
        {"emails": outbox.outbox_emails(), "backend": settings.EMAIL_BACKEND, "folder": settings.EMAIL_FILE_PATH},
    )


@require_GET
@xframe_options_sameorigin
def start(request: HttpRequest) -> HttpResponse:
    """The platform side of third-party login initiation: send the browser to the tool."""
    user = platform.USERS.get(request.GET.get("user", ""))
    message_type = request.GET.get("message", "LtiResourceLinkRequest")
    for_user = platform.USERS.get(request.GET.get("for", user.key if user else ""))
    if user is None or for_user is None or message_type not in MESSAGE_TYPES:
        return HttpResponseBadRequest("unknown user or message type")
    links = {link["id"]: link for link in _links(request)}
    link = links.get(request.GET.get("link", platform.DEFAULT_LINK["id"]), platform.DEFAULT_LINK)
    hint = signing.dumps({"user": user.key, "message": message_type, "link": link, "for": for_user.key}, salt=HINT_SALT)
    target = (link.get("url") if message_type == "LtiResourceLinkRequest" else None) or tool_url("lti:launch")
    params = {
        "iss": platform.issuer(),
        "login_hint": user.sub,
        "target_link_uri": target,
        "lti_message_hint": hint,
        "client_id": platform.CLIENT_ID,
        "lti_deployment_id": platform.DEPLOYMENT_ID,
    }
    return redirect(tool_url("lti:login") + "?" + urlencode(params))


@csrf_exempt
@xframe_options_sameorigin
def auth(request: HttpRequest) -> HttpResponse:
    """The platform's OIDC authorization endpoint: answers with the signed id_token."""
    params = request.GET if request.method == "GET" else request.POST
    if params.get("client_id") != platform.CLIENT_ID or params.get("redirect_uri") != tool_url("lti:launch"):
        return HttpResponseBadRequest("unknown client_id or unregistered redirect_uri")
    if params.get("response_type") != "id_token" or params.get("scope") != "openid" or not params.get("nonce"):
        return HttpResponseBadRequest("not an LTI OIDC authentication request")
    try:
        hint = signing.loads(params.get("lti_message_hint", ""), salt=HINT_SALT, max_age=600)
    except signing.BadSignature:
        return HttpResponseBadRequest("bad lti_message_hint")
    user = platform.USERS[hint["user"]]
    if params.get("login_hint") != user.sub:
        return HttpResponseBadRequest("login_hint does not match")
    link = hint["link"]
    resource_link = {"id": link["id"], "title": link["title"]}
    if link.get("text"):
        resource_link["description"] = link["text"]
    claims = platform.message_claims(
        user=user,
        nonce=params["nonce"],
        message_type=hint["message"],
        resource_link=resource_link,
        target_link_uri=link.get("url") if hint["message"] == "LtiResourceLinkRequest" else None,
        custom=moodle.custom_claim(link.get("custom", "")) if hint["message"] == "LtiResourceLinkRequest" else None,
        for_user=platform.USERS[hint.get("for", user.key)],
    )
    id_token = platform.platform_key().sign(claims)
    return render(
        request,
        "devlms/form_post.html",
        {"action": params["redirect_uri"], "fields": {"id_token": id_token, "state": params.get("state", "")}},
    )


@require_GET
def jwks(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"keys": [platform.platform_key().jwk]})


@csrf_exempt
@require_POST
@xframe_options_sameorigin
def deep_link_return(request: HttpRequest) -> HttpResponse:
    """Receives the tool's LtiDeepLinkingResponse, verified against the tool's JWKS, and adds
    what Moodle 4.5 would add from it (or fails where Moodle fails: devlms/moodle.py)."""
    token = request.POST.get("JWT", "")
    try:
        signing_key = jwt.PyJWKClient(tool_url("lti:jwks"), timeout=10).get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token, signing_key.key, algorithms=["RS256"], audience=platform.issuer(), issuer=platform.CLIENT_ID
        )
    except jwt.PyJWTError as exc:
        return HttpResponseBadRequest(f"deep linking response refused: {exc}")
    try:
        activities, message = moodle.deep_linking_response_activities(claims, tool_name=platform.DEFAULT_LINK["title"])
    except moodle.MoodleFatalError as exc:
        return render(request, "devlms/moodle_error.html", {"error": str(exc)}, status=exc.status)
    except moodle.MoodleRefusal as exc:
        return render(request, "devlms/deep_link_done.html", {"error": str(exc), "activities": []})
    links = request.session.get("devlms_links", [])
    for activity in activities:
        links.append(
            {
                "id": f"devlms-link-{len(links) + 2}",
                "title": activity.name,
                "text": activity.intro,
                "url": activity.tool_url,
                "custom": activity.custom_parameters,
            }
        )
    request.session["devlms_links"] = links
    return render(request, "devlms/deep_link_done.html", {"activities": activities, "message": message})
