"""Teacher review pages (server-rendered; plain forms, no JavaScript needed).

    /review/enter/  (POST t=<launch token>)  turns the chat page's launch into a review session
    /review/<course>/                   overview, filters, conversations, consent, exports
    /review/<course>/conversations/<id>/  every tutor reply with its review form
    /review/<course>/bulk/              approve or reject the undecided replies of chosen conversations
    /review/<course>/export.csv         the filtered conversations' messages, ratings and flags (scrubbed)

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

import csv
from collections.abc import Iterator
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from tutor import review, selectors
from tutor.access import ReviewEntryRefused, review_entry_open, review_page
from tutor.errors import DomainError
from tutor.models import FlagState, Membership, Message, MessageStatus, ReviewDecision, Role
from tutor.serializers import ConversationFiltersIn
from tutor.services import training_consent_set

CONVERSATIONS_PER_PAGE = 50
STUDENTS_SHOWN = 50
FILTER_FIELDS = ("flagged", "unreviewed", "rated_down", "since", "until", "student", "q")

RATING_LABELS = [
    ("helpful", "Helpful"),
    ("correct", "Correct"),
    ("pedagogically_sound", "Pedagogically sound"),
    ("age_appropriate", "Age-appropriate"),
]


REPLY_DONE = {
    "approve": "Saved and approved for training.",
    "reject": "Saved and rejected: this reply will not be used for training.",
    "reset": "Saved; the reply is undecided again.",
    "save": "Saved.",
}
BULK_ACTIONS = {"approve": ReviewDecision.APPROVED, "reject": ReviewDecision.REJECTED}


class BulkActionRefused(DomainError):
    code = "bulk_action_refused"
    status = 400
    title = "Nothing was changed"


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
    launched, _ = review_entry_open(
        request,
        refusal="The review can only be opened from the tutor's own page. Open the tutor from your course and "
        "choose “Review conversations”.",
    )
    # The safety banner's button opens the queue; anything else the course's review.
    target = "review-flags" if request.POST.get("next") == "flags" else "review-course"
    return HttpResponseRedirect(reverse(target, args=[launched.course_id]))


def _filter_query(params) -> str:
    """The filters of the page's query string, without the page number (for links that keep them)."""
    return urlencode([(name, params[name]) for name in FILTER_FIELDS if params.get(name)])


@require_GET
@review_page()
def review_course(request: HttpRequest, course_id: int, *, reviewer: Membership) -> HttpResponse:
    filters = ConversationFiltersIn.read(request.GET, form=True)
    names = selectors.student_names(course_id=course_id)
    page = Paginator(
        selectors.review_conversations(course_id=course_id, filters=filters), CONVERSATIONS_PER_PAGE
    ).get_page(request.GET.get("page"))
    students = selectors.course_student_activity(course_id=course_id, names=names)
    overview = selectors.course_overview(course_id=course_id)
    return render(
        request,
        "tutor/review/course.html",
        {
            "tool_title": settings.TOOL_TITLE,
            "course": reviewer.course,
            "reviewer": reviewer,
            "is_admin": reviewer.role == Role.ADMIN,
            "filters": filters,
            "filter_query": _filter_query(request.GET),
            "return_query": request.GET.urlencode(),
            "page": page,
            "rows": [(conversation, names.get(conversation.person_id, "")) for conversation in page],
            "students": students[:STUDENTS_SHOWN],
            "students_total": len(students),
            "student_choices": sorted(students, key=lambda row: (row.name.lower(), row.pseudonym)),
            "topics": selectors.student_topics(course_id=course_id),
            "rated_down": selectors.replies_rated_down(course_id=course_id),
            "next_unreviewed": selectors.review_next_unreviewed(course_id=course_id),
            "overview": overview,
            "per_week_max": max((row["count"] for row in overview["per_week"]), default=0),
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
            "next_unreviewed": selectors.review_next_unreviewed(course_id=course_id, after=conversation),
            "items": [
                {
                    "message": message,
                    "ratings": [
                        (name, label, getattr(getattr(message, "review", None), name, None))
                        for name, label in RATING_LABELS
                    ],
                    "flagged": any(flag.state != FlagState.RESOLVED for flag in message.flags.all()),
                    "reviewable": message.sender == Message.Sender.TUTOR
                    and message.status == MessageStatus.COMPLETE
                    and not message.guardrail,
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
        messages.success(request, "Reply flagged for the safety queue." if action == "flag" else "Flag resolved.")
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
        messages.success(request, REPLY_DONE.get(action, REPLY_DONE["save"]))
    url = reverse("review-conversation", args=[course_id, message.conversation_id])
    return HttpResponseRedirect(f"{url}#m{message_id}")


@require_POST
@review_page()
def review_training_consent(request: HttpRequest, course_id: int, *, reviewer: Membership) -> HttpResponse:
    allowed = request.POST.get("allowed") == "1"
    training_consent_set(course=reviewer.course, actor=reviewer, allowed=allowed)
    messages.success(
        request,
        "Training on approved replies is allowed."
        if allowed
        else "This course's conversations are no longer used for training.",
    )
    return HttpResponseRedirect(reverse("review-course", args=[course_id]))


@require_POST
@review_page()
def review_bulk(request: HttpRequest, course_id: int, *, reviewer: Membership) -> HttpResponse:
    """The course page's bulk action: approve or reject the undecided replies of the ticked conversations."""
    decision = BULK_ACTIONS.get(request.POST.get("action", ""))
    if decision is None:
        raise BulkActionRefused("Choose “Approve” or “Reject” for the ticked conversations.", code="unknown_action")
    try:
        conversation_ids = [int(value) for value in request.POST.getlist("conversation")]
    except ValueError as exc:
        raise BulkActionRefused("A ticked conversation is not one of this course's.", code="bad_selection") from exc
    if not conversation_ids:
        raise BulkActionRefused("Tick the conversations first, then approve or reject them.", code="empty_selection")
    decided = review.replies_bulk_decide(reviewer=reviewer, conversation_ids=conversation_ids, decision=decision)
    verb = "Approved" if decision == ReviewDecision.APPROVED else "Rejected"
    messages.success(
        request,
        f"{verb} {decided} undecided repl{'y' if decided == 1 else 'ies'} in {len(conversation_ids)} "
        f"conversation{'' if len(conversation_ids) == 1 else 's'}; replies already decided kept their decision.",
    )
    query = request.POST.get("filters", "")
    return HttpResponseRedirect(reverse("review-course", args=[course_id]) + (f"?{query}" if query else ""))


CSV_COLUMNS = [
    "conversation",
    "conversation_title",
    "student",
    "student_pseudonym",
    "message",
    "time",
    "sender",
    "text",
    "status",
    "screened",
    "student_rating",
    "decision",
    *review.RATING_FIELDS,
    "correction",
    "flags",
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    # A spreadsheet runs a cell starting with = (+, -, @) as a formula: students' text is not one.
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv_row(message: Message, names: dict[int, str]) -> list:
    conversation = message.conversation
    reply_review = getattr(message, "review", None)
    ratings = [getattr(reply_review, name, None) for name in review.RATING_FIELDS]
    return [
        conversation.id,
        _cell(conversation.title),
        _cell(names.get(conversation.person_id, "")),
        conversation.person.pseudonym[:8],
        message.id,
        message.created_at.isoformat(timespec="seconds"),
        "student" if message.sender == Message.Sender.STUDENT else "tutor",
        _cell(message.content_scrubbed or ""),
        message.status,
        message.guardrail,
        "" if message.student_rating is None else message.student_rating,
        reply_review.decision if reply_review else "",
        *["" if value is None else ("yes" if value else "no") for value in ratings],
        _cell(reply_review.correction_scrubbed if reply_review else ""),
        "; ".join(f"{flag.category}:{flag.state}" for flag in message.flags.all()),
    ]


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_lines(rows: Iterator[list]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield "\ufeff"  # a BOM: spreadsheets then read the file as UTF-8
    yield writer.writerow(CSV_COLUMNS)
    for row in rows:
        yield writer.writerow(row)


@require_GET
@review_page()
def review_export_csv(request: HttpRequest, course_id: int, *, reviewer: Membership) -> StreamingHttpResponse:
    """The conversations the page's filters select, one row per message: the scrubbed text, the
    student's and the teachers' ratings, the decision, the correction (scrubbed) and the flags.
    Students appear as the review pages show them (the name the LMS sent, the pseudonym's start);
    never an LMS id, an email or a message's raw text."""
    filters = ConversationFiltersIn.read(request.GET, form=True)
    names = selectors.student_names(course_id=course_id)
    rows = (
        _csv_row(message, names) for message in selectors.review_export_messages(course_id=course_id, filters=filters)
    )
    response = StreamingHttpResponse(_csv_lines(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="course-{course_id}-conversations.csv"'
    return response
