"""Who is calling: the launch token and the launched session.

After a valid LTI launch the page carries a short-lived signed launch token
(Django's signing, salted, with a timestamp). The page's own API calls send it
as `Authorization: Bearer <token>`, so nothing depends on a third-party cookie
once launched. Where cookies do work, the launch also sits in the session.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    is_authenticated = True

    @property
    def course_id(self) -> int:
        return self.membership.course_id

    @property
    def role(self) -> str:
        return self.membership.role


def launch_token_mint(*, membership_id: int, placement_id: int | None) -> str:
    return signing.dumps({"m": membership_id, "p": placement_id}, salt=LAUNCH_TOKEN_SALT)


def _launched_from_payload(payload: dict) -> Launched:
    membership = Membership.objects.select_related("course", "person").filter(pk=payload.get("m")).first()
    if membership is None:
        raise LaunchTokenInvalid("This launch no longer exists. Open the tutor again from your course.")
    return Launched(membership=membership, placement_id=payload.get("p"))


def launch_token_read(token: str) -> Launched:
    try:
        payload = signing.loads(token, salt=LAUNCH_TOKEN_SALT, max_age=settings.LAUNCH_TOKEN_MAX_AGE)
    except signing.SignatureExpired as exc:
        raise LaunchTokenInvalid(
            "Your session with the tutor has expired. Open the tutor again from your course.",
            code="launch_token_expired",
        ) from exc
    except signing.BadSignature as exc:
        raise LaunchTokenInvalid("The launch token is not valid. Open the tutor again from your course.") from exc
    return _launched_from_payload(payload)


def launch_session_store(request: HttpRequest, *, membership_id: int, placement_id: int | None) -> None:
    request.session.cycle_key()
    request.session[SESSION_KEY] = {"m": membership_id, "p": placement_id}


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
        payload = request._request.session.get(SESSION_KEY)
        if not payload:
            return None
        launched = _launched_from_payload(payload)
        self.enforce_csrf(request)
        return launched, "session"


class IsLaunched(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        if isinstance(request.user, Launched):
            return True
        raise NotAuthenticated("Open the tutor from your course to continue.")
