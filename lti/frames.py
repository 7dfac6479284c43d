"""Pages meant for the LMS iframe: framable by the registered platforms only.

X-Frame-Options cannot name several origins, so these pages drop it and send
CSP `frame-ancestors` listing the origins of active registrations (issuer,
login, token and keyset URLs) plus LTI_EXTRA_FRAME_ANCESTORS. Every other page
keeps X-Frame-Options: DENY.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers
from lti_tool.models import LtiRegistration


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme in {"http", "https"} and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    return None


def platform_origins() -> list[str]:
    origins: set[str] = set()
    for row in LtiRegistration.objects.active().values_list("issuer", "auth_url", "token_url", "keyset_url"):
        origins.update(origin for origin in map(_origin, row) if origin)
    origins.update(origin for origin in map(_origin, settings.LTI_EXTRA_FRAME_ANCESTORS) if origin)
    return sorted(origins)


def apply_frame_policy(response: HttpResponse) -> HttpResponse:
    response["Content-Security-Policy"] = "frame-ancestors " + " ".join(["'self'", *platform_origins()])
    response.xframe_options_exempt = True
    return response


def lms_frameable(view):
    """Decorator for views rendered inside the LMS; their error pages get the same policy.

    These pages carry launch tokens and one-time tickets, so they are never cached.
    """

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs):
        request.frame_policy = apply_frame_policy
        response = apply_frame_policy(view(request, *args, **kwargs))
        add_never_cache_headers(response)
        return response

    return wrapped
