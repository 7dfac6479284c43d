"""Who is calling: the launch token and the launched session.

After a valid LTI launch the page carries a short-lived signed launch token
(Django's signing, salted, with a timestamp). The page's own API calls send it
as `Authorization: Bearer <token>`, so nothing depends on a third-party cookie
once launched. Where cookies do work, the launch also sits in the session.

A launch ends when its token expires (LAUNCH_TOKEN_MAX_AGE), in the session too:
the session is given the token's expiry (its cookie and its row), and the expiry
is stored with the launch and checked on every request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core import signing
from django.http import HttpRequest
from rest_framework import authentication, permissions

from tutor.errors import DomainError, NotAuthenticated
from tutor.models import Membership

LAUNCH_TOKEN_SALT = "tutor.launch-token"
SESSION_KEY = "tutor_launch"


class LaunchTokenInvalid(DomainError):
    code = "launch_token_invalid"
    status = 401
    title = "Your session with the tutor has ended"


@dataclass(frozen=True)
class Launched:
    """The launched person in one course (and placement), as DRF's request.user."""

    membership: Membership
    placement_id: int | None
    expires_at: int | None = None  # Unix time the launch ends (None: made in code, never stored)

    is_authenticated = True

    @property
    def course_id(self) -> int:
        return self.membership.course_id

    @property
    def role(self) -> str:
        return self.membership.role


def _expired() -> LaunchTokenInvalid:
    return LaunchTokenInvalid(
        "Your session with the tutor has expired. Open the tutor again from your course.",
        code="launch_token_expired",
    )


def _launched_from_payload(payload: dict) -> Launched:
    expires_at = payload.get("x")
    if not isinstance(expires_at, int) or expires_at <= time.time():
        raise _expired()
    membership = Membership.objects.select_related("course", "person").filter(pk=payload.get("m")).first()
    if membership is None:
        raise LaunchTokenInvalid("This launch no longer exists. Open the tutor again from your course.")
    return Launched(membership=membership, placement_id=payload.get("p"), expires_at=expires_at)


def launch_token_read(token: str) -> Launched:
    try:
        payload = signing.loads(token, salt=LAUNCH_TOKEN_SALT, max_age=settings.LAUNCH_TOKEN_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise _expired() from exc
    except signing.BadSignature as exc:
        raise LaunchTokenInvalid("The launch token is not valid. Open the tutor again from your course.") from exc
    return _launched_from_payload(payload)


def _session_store(request: HttpRequest, payload: dict) -> None:
    request.session.cycle_key()
    request.session[SESSION_KEY] = payload
    # An absolute expiry (a datetime, not seconds): later saves of the session never extend it.
    request.session.set_expiry(datetime.fromtimestamp(payload["x"], tz=UTC))


def launch_begin(request: HttpRequest, *, membership_id: int, placement_id: int | None) -> str:
    """A new launch: the signed token for the page, and the session, which ends with the token."""
    payload = {"m": membership_id, "p": placement_id, "x": int(time.time()) + settings.LAUNCH_TOKEN_MAX_AGE}
    _session_store(request, payload)
    return signing.dumps(payload, salt=LAUNCH_TOKEN_SALT)


def launch_session_enter(request: HttpRequest, *, launched: Launched) -> None:
    """Puts a launch read from its token into this browser's session (the review tab), for
    what is left of the token's life."""
    _session_store(request, {"m": launched.membership.id, "p": launched.placement_id, "x": launched.expires_at})


def launch_session_read(request: HttpRequest) -> Launched | None:
    """The launch stored in the session, None without one; an expired one is removed and refused."""
    payload = request.session.get(SESSION_KEY)
    if not payload:
        return None
    try:
        return _launched_from_payload(payload)
    except LaunchTokenInvalid:
        request.session.flush()
        raise


class LaunchTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header.startswith(self.keyword + " "):
            return None
        launched = launch_token_read(header[len(self.keyword) + 1 :].strip())
        return launched, "launch-token"

    def authenticate_header(self, request) -> str:
        return self.keyword


class LaunchSessionAuthentication(authentication.SessionAuthentication):
    """The launch stored in the Django session, with DRF's CSRF check on writes."""

    def authenticate(self, request):
        launched = launch_session_read(request._request)
        if launched is None:
            return None
        self.enforce_csrf(request)
        return launched, "session"


class IsLaunched(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        if isinstance(request.user, Launched):
            return True
        raise NotAuthenticated("Open the tutor from your course to continue.")
