"""Who may do what, in one place, for every app: DRF permission classes for the APIs and a
decorator for the server-rendered review pages.

    class ReviewFlagListApi(APIView):
        permission_classes = [IsCourseReviewer]        # then: request.reviewer

    @review_page()                                      # or review_page(admin=True)
    def review_course(request, course_id, *, reviewer): ...

A student is launched (tutor.auth.IsLaunched, the API default). A reviewer is a teacher or
admin of the course: another course answers 404 (we do not say it exists), a student of the
course 403. An admin may also export data and train. The refusals are domain errors, so they
take the one error contract's JSON shape or page (tutor.errors).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework.request import Request

from tutor.auth import IsLaunched, Launched, launch_session_enter, launch_session_read, launch_token_read
from tutor.errors import DomainError, Forbidden, NotAuthenticated, NotFound
from tutor.models import Membership, Role

REVIEWER_ROLES = frozenset({Role.TEACHER, Role.ADMIN})


def reviewer_get(*, person_id: int, course_id: int) -> Membership:
    """The person's teacher or admin membership in the course. Another course: 404; a student of
    this course: 403."""
    membership = (
        Membership.objects.select_related("course", "person").filter(person_id=person_id, course_id=course_id).first()
    )
    if membership is None:
        raise NotFound("No such course.")
    if membership.role not in REVIEWER_ROLES:
        raise Forbidden("Only the course's teachers can review its conversations.")
    return membership


def admin_check(*, reviewer: Membership) -> None:
    if reviewer.role != Role.ADMIN:
        raise Forbidden(
            "Training the tutor is for the course's administrators. As a teacher you can review, correct and "
            "approve replies (they become the training data); ask your LMS administrator to start a retraining."
        )


class IsCourseReviewer(IsLaunched):
    """A teacher or admin of the launched course; sets `request.reviewer` (their Membership)."""

    admin_only = False

    def has_permission(self, request: Request, view) -> bool:
        super().has_permission(request, view)
        launched = request.user
        reviewer = reviewer_get(person_id=launched.membership.person_id, course_id=launched.course_id)
        if self.admin_only:
            admin_check(reviewer=reviewer)
        request.reviewer = reviewer
        return True


class IsCourseAdmin(IsCourseReviewer):
    """An admin of the launched course; sets `request.reviewer`."""

    admin_only = True


def page_reviewer(request: HttpRequest, *, course_id: int) -> Membership:
    """The reviewer of a review page, from the launched session."""
    launched = launch_session_read(request)
    if launched is None:
        raise NotAuthenticated(
            "Open the tutor from your course, then choose “Review conversations” (or, for an urgent flag, "
            "“Open the safety queue”)."
        )
    return reviewer_get(person_id=launched.membership.person_id, course_id=course_id)


def review_page(*, admin: bool = False) -> Callable:
    """Decorates a review page view taking `course_id`: it is called with `reviewer=` (the
    caller's Membership in that course), or refused as above."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, course_id: int, *args, **kwargs) -> HttpResponse:
            reviewer = page_reviewer(request, course_id=course_id)
            if admin:
                admin_check(reviewer=reviewer)
            return view(request, course_id, *args, reviewer=reviewer, **kwargs)

        return wrapped

    return decorate


class ReviewEntryRefused(DomainError):
    code = "review_entry_refused"
    status = 403
    title = "The page could not be opened"


def review_entry_open(request: HttpRequest, *, refusal: str) -> tuple[Launched, Membership]:
    """A review session for the launch whose token the launch page posted (POST t=<token>), for the
    review and training pages' entries. The token travels in the body, never in a URL (access logs and
    history keep URLs); the Origin must be the tool's own, which stops login CSRF. `refusal` says, in
    the page's words, where to open it from instead."""
    public = urlsplit(settings.PUBLIC_BASE_URL)
    if request.headers.get("Origin") != f"{public.scheme}://{public.netloc}":
        raise ReviewEntryRefused(refusal)
    launched = launch_token_read(request.POST.get("t", ""))
    reviewer = reviewer_get(person_id=launched.membership.person_id, course_id=launched.course_id)
    launch_session_enter(request, launched=launched)
    return launched, reviewer
