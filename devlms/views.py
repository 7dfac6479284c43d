"""The development LMS's pages and platform endpoints."""

from __future__ import annotations

from urllib.parse import urlencode

import jwt
from django.core import signing
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from devlms import platform
from lti.services import tool_url

HINT_SALT = "devlms.message-hint"


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    links = [platform.DEFAULT_LINK, *request.session.get("devlms_links", [])]
    return render(
        request,
        "devlms/home.html",
        {"users": platform.USERS.values(), "links": links, "course": platform.COURSE, "issuer": platform.issuer()},
    )


@require_GET
def start(request: HttpRequest) -> HttpResponse:
    """The platform side of third-party login initiation: send the browser to the tool."""
    user = platform.USERS.get(request.GET.get("user", ""))
    message_type = request.GET.get("message", "LtiResourceLinkRequest")
    if user is None or message_type not in {"LtiResourceLinkRequest", "LtiDeepLinkingRequest"}:
        return HttpResponseBadRequest("unknown user or message type")
    links = {link["id"]: link for link in [platform.DEFAULT_LINK, *request.session.get("devlms_links", [])]}
    link = links.get(request.GET.get("link", platform.DEFAULT_LINK["id"]), platform.DEFAULT_LINK)
    hint = signing.dumps({"user": user.key, "message": message_type, "link": link}, salt=HINT_SALT)
    params = {
        "iss": platform.issuer(),
        "login_hint": user.sub,
        "target_link_uri": tool_url("lti:launch"),
        "lti_message_hint": hint,
        "client_id": platform.CLIENT_ID,
        "lti_deployment_id": platform.DEPLOYMENT_ID,
    }
    return redirect(tool_url("lti:login") + "?" + urlencode(params))


@csrf_exempt
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
    claims = platform.message_claims(
        user=user, nonce=params["nonce"], message_type=hint["message"], resource_link=hint["link"]
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
def deep_link_return(request: HttpRequest) -> HttpResponse:
    """Receives the tool's LtiDeepLinkingResponse, verified against the tool's JWKS."""
    token = request.POST.get("JWT", "")
    try:
        signing_key = jwt.PyJWKClient(tool_url("lti:jwks"), timeout=10).get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token, signing_key.key, algorithms=["RS256"], audience=platform.issuer(), issuer=platform.CLIENT_ID
        )
    except jwt.PyJWTError as exc:
        return HttpResponseBadRequest(f"deep linking response refused: {exc}")
    items = claims.get("https://purl.imsglobal.org/spec/lti-dl/claim/content_items", [])
    links = request.session.get("devlms_links", [])
    for item in items:
        if item.get("type") == "ltiResourceLink":
            links.append({"id": f"devlms-link-{len(links) + 2}", "title": item.get("title") or "AI Tutor"})
    request.session["devlms_links"] = links
    return render(request, "devlms/deep_link_done.html", {"items": items})
