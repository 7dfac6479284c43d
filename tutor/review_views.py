"""Teacher review pages (server-rendered; plain forms, no JavaScript needed).

    /review/enter/  (POST t=<launch token>)  turns the chat page's launch into a review session
    /review/<course>/                   overview, filters, conversations, consent, exports
    /review/<course>/conversations/<id>/  every tutor reply with its review form

They open in a tab of their own (not framed by the LMS). Authentication is the launched
session, which ends with the launch token it was made from; a teacher of course A asking for
course B gets 404, a student 403 (tutor.access.review_page). Reads come from tutor.selectors,
every write goes through a service (recorded with who and when); the filters are read by the
API's own filter serializer (a bad one is shown as an error page), and notices travel as
django.contrib.messages.

The launch token reaches /review/enter/ in a POST body, never in a URL: access logs, browser
history and Referer headers keep URLs, and the token opens a teacher's review.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from tutor import review, selectors
from tutor.access import review_page, reviewer_get
from tutor.auth import launch_session_enter, launch_token_read
from tutor.errors import DomainError
from tutor.models import FlagState, Membership, ReviewDecision, Role
from tutor.serializers import ConversationFiltersIn
from tutor.services import training_consent_set

RATING_LABELS = [
    ("helpful", "Helpful"),
    ("correct", "Correct"),
    ("pedagogically_sound", "Pedagogically sound"),
    ("age_appropriate", "Age-appropriate"),
]


class ReviewEntryRefused(DomainError):
    code = "review_entry_refused"
    status = 403
    title = "The review could not be opened"


def _tristate(value: str | None) -> bool | None:
    return {"yes": True, "no": False}.get(value or "")


@csrf_exempt  # the launch token in the body is the credential; the Origin check stops login CSRF
@require_http_methods(["GET", "POST"])
def review_enter(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        # Links of older pages carried the token in the URL; a token there is never accepted.
        raise ReviewEntryRefused(
            "This review link is out of date. Open the tutor from your course and choose “Review conversations” again.",
            code="review_link_outdated",
            status=400,
        )
    public = urlsplit(settings.PUBLIC_BASE_URL)
    if request.headers.get("Origin") != f"{public.scheme}://{public.netloc}":
        raise ReviewEntryRefused(
            "The review can only be opened from the tutor's own page. Open the tutor from your course and choose "
            "“Review conversations”."
        )
    launched = launch_token_read(request.POST.get("t", ""))
    reviewer_get(person_id=launched.membership.person_id, course_id=launched.course_id)
    launch_session_enter(request, launched=launched)
    # The safety banner's button opens the queue; anything else the course's review.
    target = "review-flags" if request.POST.get("next") == "flags" else "review-course"
    return HttpResponseRedirect(reverse(target, args=[launched.course_id]))


@require_GET
@review_page()
def review_course(request: HttpRequest, course_id: int, *, reviewer: Membership) -> HttpResponse:
    filters = ConversationFiltersIn.read(request.GET, form=True)
    names = selectors.student_names(course_id=course_id)
    return render(
        request,
        "tutor/review/course.html",
        {
            "tool_title": settings.TOOL_TITLE,
            "course": reviewer.course,
            "reviewer": reviewer,
            "is_admin": reviewer.role == Role.ADMIN,
            "filters": filters,
            "rows": [
                (conversation, names.get(conversation.person_id, ""))
                for conversation in selectors.review_conversations(course_id=course_id, filters=filters)[:200]
            ],
            "overview": selectors.course_overview(course_id=course_id),
            "tutor_settings": selectors.tutor_settings_get(course_id=course_id),
            "exports": selectors.course_exports_recent(course=reviewer.course),
        },
    )


@require_GET
@review_page()
def review_conversation(
    request: HttpRequest, course_id: int, conversation_id: int, *, reviewer: Membership
) -> HttpResponse:
    conversation = selectors.review_conversation_get(course_id=course_id, conversation_id=conversation_id)
    return render(
        request,
        "tutor/review/conversation.html",
        {
            "tool_title": settings.TOOL_TITLE,
            "course": reviewer.course,
            "conversation": conversation,
            "student_name": selectors.student_names(course_id=course_id).get(conversation.person_id, ""),
            "items": [
                {
                    "message": message,
                    "ratings": [
                        (name, label, getattr(getattr(message, "review", None), name, None))
                        for name, label in RATING_LABELS
                    ],
                    "flagged": any(flag.state != FlagState.RESOLVED for flag in message.flags.all()),
                }
                for message in selectors.review_messages(conversation=conversation)
            ],
        },
    )


@require_POST
@review_page()
def review_reply(request: HttpRequest, course_id: int, message_id: int, *, reviewer: Membership) -> HttpResponse:
    """One form per tutor reply: save ratings and correction, then approve/reject/flag."""
    action = request.POST.get("action", "save")
    if action in {"flag", "unflag"}:
        message = review.message_flag_set(
            reviewer=reviewer, message_id=message_id, flagged=action == "flag", reason=request.POST.get("reason", "")
        )
    else:
        decision = {
            "approve": ReviewDecision.APPROVED,
            "reject": ReviewDecision.REJECTED,
            "reset": ReviewDecision.PENDING,
        }.get(action)
        ratings = {name: _tristate(request.POST.get(name)) for name in review.RATING_FIELDS}
        updated = review.reply_review_update(
            reviewer=reviewer,
            message_id=message_id,
            ratings=ratings,
            correction=request.POST.get("correction", ""),
            decision=decision,
        )
        message = updated.message
    url = reverse("review-conversation", args=[course_id, message.conversation_id])
    return HttpResponseRedirect(f"{url}#m{message_id}")


@require_POST
@review_page()
def review_training_consent(request: HttpRequest, course_id: int, *, reviewer: Membership) -> HttpResponse:
    training_consent_set(course=reviewer.course, actor=reviewer, allowed=request.POST.get("allowed") == "1")
    return HttpResponseRedirect(reverse("review-course", args=[course_id]))
