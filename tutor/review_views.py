"""Teacher review pages (server-rendered; plain forms, no JavaScript needed).

    /review/enter/  (POST t=<launch token>)  turns the chat page's launch into a review session
    /review/<course>/                   overview, filters, conversations, consent, exports
    /review/<course>/conversations/<id>/  every tutor reply with its review form

They open in a tab of their own (not framed by the LMS). Authentication is the launched
session, which ends with the launch token it was made from; a teacher of course A asking for
course B gets 404, a student 403. Every write goes through tutor.review's services (recorded
with who and when).

The launch token reaches /review/enter/ in a POST body, never in a URL: access logs, browser
history and Referer headers keep URLs, and the token opens a teacher's review.
"""

from __future__ import annotations

from datetime import date
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from tutor import review
from tutor.access import page_reviewer, reviewer_get
from tutor.auth import launch_session_enter, launch_token_read
from tutor.errors import DomainError
from tutor.models import FlagState, ReviewDecision
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


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


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
def review_course(request: HttpRequest, course_id: int) -> HttpResponse:
    reviewer = page_reviewer(request, course_id=course_id)
    filters = review.ConversationFilters(
        flagged=request.GET.get("flagged") == "1",
        unreviewed=request.GET.get("unreviewed") == "1",
        rated_down=request.GET.get("rated_down") == "1",
        since=_date(request.GET.get("since")),
        until=_date(request.GET.get("until")),
    )
    from tutor.chat import tutor_settings_get

    names = review.student_names(course_id=course_id)
    return render(
        request,
        "tutor/review/course.html",
        {
            "tool_title": settings.TOOL_TITLE,
            "course": reviewer.course,
            "reviewer": reviewer,
            "is_admin": reviewer.role == "admin",
            "filters": filters,
            "rows": [
                (conversation, names.get(conversation.person_id, ""))
                for conversation in review.review_conversations(course_id=course_id, filters=filters)[:200]
            ],
            "overview": review.course_overview(course_id=course_id),
            "tutor_settings": tutor_settings_get(course_id=course_id),
            "exports": reviewer.course.dataset_exports.order_by("-id")[:10],
            "notice": request.GET.get("notice", ""),
        },
    )


@require_GET
def review_conversation(request: HttpRequest, course_id: int, conversation_id: int) -> HttpResponse:
    reviewer = page_reviewer(request, course_id=course_id)
    conversation = review.review_conversation_get(course_id=course_id, conversation_id=conversation_id)
    return render(
        request,
        "tutor/review/conversation.html",
        {
            "tool_title": settings.TOOL_TITLE,
            "course": reviewer.course,
            "conversation": conversation,
            "student_name": review.student_names(course_id=course_id).get(conversation.person_id, ""),
            "items": [
                {
                    "message": message,
                    "ratings": [
                        (name, label, getattr(getattr(message, "review", None), name, None))
                        for name, label in RATING_LABELS
                    ],
                    "flagged": any(flag.state != FlagState.RESOLVED for flag in message.flags.all()),
                }
                for message in review.review_messages(conversation=conversation)
            ],
        },
    )


@require_POST
def review_reply(request: HttpRequest, course_id: int, message_id: int) -> HttpResponse:
    """One form per tutor reply: save ratings and correction, then approve/reject/flag."""
    reviewer = page_reviewer(request, course_id=course_id)
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
def review_training_consent(request: HttpRequest, course_id: int) -> HttpResponse:
    reviewer = page_reviewer(request, course_id=course_id)
    training_consent_set(course=reviewer.course, actor=reviewer, allowed=request.POST.get("allowed") == "1")
    return HttpResponseRedirect(reverse("review-course", args=[course_id]))
