"""Teacher review: who may review a course, the reads of the review screens, and the writes
(ratings, corrections, approval, flags), each recorded as a ReviewEvent with who and when.

Teachers see the scrubbed copy of every message: what they approve is exactly what
a dataset will contain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.db.models.functions import TruncWeek
from django.utils import timezone

from tutor import scrubbing
from tutor.errors import NotFound
from tutor.flags import UNRESOLVED, flag_raise, flags_resolve_for_message, flags_unresolved
from tutor.models import (
    Conversation,
    Flag,
    Membership,
    Message,
    MessageStatus,
    ReplyReview,
    ReviewDecision,
)
from tutor.services import review_event_record

RATING_FIELDS = ("helpful", "correct", "pedagogically_sound", "age_appropriate")


# -- reads ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConversationFilters:
    flagged: bool = False
    unreviewed: bool = False
    rated_down: bool = False
    since: date | None = None
    until: date | None = None


def review_conversations(*, course_id: int, filters: ConversationFilters) -> QuerySet[Conversation]:
    replies = Message.objects.filter(conversation=OuterRef("pk"), sender=Message.Sender.TUTOR)
    conversations = Conversation.objects.filter(course_id=course_id).annotate(
        reply_count=Count("messages", filter=Q(messages__sender=Message.Sender.TUTOR), distinct=True),
        open_flags=Count("flags", filter=Q(flags__state__in=UNRESOLVED), distinct=True),
        approved=Count("messages", filter=Q(messages__review__decision=ReviewDecision.APPROVED), distinct=True),
        has_unreviewed=Exists(
            replies.filter(status=MessageStatus.COMPLETE, guardrail="").exclude(
                review__decision__in=[ReviewDecision.APPROVED, ReviewDecision.REJECTED]
            )
        ),
        has_rated_down=Exists(replies.filter(student_rating=-1)),
    )
    if filters.flagged:
        conversations = conversations.filter(open_flags__gt=0)
    if filters.unreviewed:
        conversations = conversations.filter(has_unreviewed=True)
    if filters.rated_down:
        conversations = conversations.filter(has_rated_down=True)
    if filters.since:
        conversations = conversations.filter(updated_at__date__gte=filters.since)
    if filters.until:
        conversations = conversations.filter(updated_at__date__lte=filters.until)
    return conversations.select_related("person").order_by("-updated_at")


def review_conversation_get(*, course_id: int, conversation_id: int) -> Conversation:
    conversation = Conversation.objects.filter(pk=conversation_id, course_id=course_id).first()
    if conversation is None:
        raise NotFound("No such conversation in this course.")
    return conversation


def review_messages(*, conversation: Conversation) -> list[Message]:
    return list(conversation.messages.select_related("review").prefetch_related("flags").order_by("id"))


def review_messages_one(*, course_id: int, message_id: int) -> Message:
    message = (
        Message.objects.select_related("review")
        .prefetch_related("flags")
        .filter(pk=message_id, conversation__course_id=course_id)
        .first()
    )
    if message is None:
        raise NotFound("No such message in this course.")
    return message


def student_names(*, course_id: int) -> dict[int, str]:
    """person id → the name the LMS sent, for teachers' screens (REVIEW_SHOW_NAMES)."""
    from django.conf import settings

    from tutor.models import MemberName

    if not settings.REVIEW_SHOW_NAMES:
        return {}
    return {
        name.membership.person_id: str(name)
        for name in MemberName.objects.filter(membership__course_id=course_id).select_related("membership")
    }


def course_overview(*, course_id: int, weeks: int = 8) -> dict:
    """Conversations per week, the share of replies rated helpful, open flags, review progress."""
    since = timezone.now() - timedelta(weeks=weeks)
    per_week = (
        Conversation.objects.filter(course_id=course_id, created_at__gte=since)
        .annotate(week=TruncWeek("created_at"))
        .values("week")
        .annotate(count=Count("id"))
        .order_by("week")
    )
    replies = Message.objects.filter(conversation__course_id=course_id, sender=Message.Sender.TUTOR)
    teacher_rated = replies.filter(review__helpful__isnull=False)
    student_rated = replies.filter(student_rating__isnull=False)

    def share(queryset, condition: Q) -> float | None:
        total = queryset.count()
        return round(100 * queryset.filter(condition).count() / total) if total else None

    return {
        "per_week": [{"week": row["week"].date(), "count": row["count"]} for row in per_week],
        "conversations": Conversation.objects.filter(course_id=course_id).count(),
        "replies": replies.count(),
        "helpful_teacher_pct": share(teacher_rated, Q(review__helpful=True)),
        "helpful_student_pct": share(student_rated, Q(student_rating=1)),
        "open_flags": flags_unresolved(course_id=course_id).count(),  # what the safety queue lists
        "approved": replies.filter(review__decision=ReviewDecision.APPROVED).count(),
        "corrected": replies.filter(review__decision=ReviewDecision.APPROVED).exclude(review__correction="").count(),
        "rejected": replies.filter(review__decision=ReviewDecision.REJECTED).count(),
    }


# -- writes -----------------------------------------------------------------------------------------

UNSET = object()


def _reply_for_review(*, reviewer: Membership, message_id: int) -> Message:
    message = (
        Message.objects.select_related("conversation")
        .filter(pk=message_id, sender=Message.Sender.TUTOR, conversation__course_id=reviewer.course_id)
        .first()
    )
    if message is None:
        raise NotFound("No such tutor reply in this course.")
    return message


@transaction.atomic
def reply_review_update(
    *,
    reviewer: Membership,
    message_id: int,
    ratings: dict[str, bool | None] | None = None,
    correction: str | None = None,
    decision: str | None = None,
) -> ReplyReview:
    """Ratings (True/False/None per field), the corrected ideal reply, approve/reject/reset.

    Teachers are shown the correction's scrubbed copy: sent back unchanged, it leaves the
    correction as it is (the form and the API send the whole correction with every save)."""
    message = _reply_for_review(reviewer=reviewer, message_id=message_id)
    review, _ = ReplyReview.objects.select_for_update().get_or_create(message=message)
    changes: dict = {}
    for name, value in (ratings or {}).items():
        if name not in RATING_FIELDS:
            raise ValueError(f"unknown rating {name}")
        if getattr(review, name) != value:
            setattr(review, name, value)
            changes[name] = value
    if correction is not None and correction.strip() not in {review.correction, review.correction_scrubbed}:
        review.correction = correction.strip()
        # It takes the reply's place: what the conversation holds (the student's id…) goes too.
        scrubbed = scrubbing.text_scrub(conversation=message.conversation, text=review.correction)
        review.correction_scrubbed = scrubbed.text
        changes["correction"] = {"chars": len(review.correction), "pii_found": scrubbed.entities}
    if decision is not None and decision != review.decision:
        if decision not in ReviewDecision.values:
            raise ValueError(f"unknown decision {decision}")
        review.decision = decision
        changes["decision"] = decision
    if changes:
        review.reviewed_by = reviewer.person
        review.reviewed_at = timezone.now()
        review.save()
        review_event_record(
            course_id=reviewer.course_id,
            actor=reviewer.person,
            action="reply_review",
            message_id=message.id,
            **changes,
        )
    return review


@transaction.atomic
def message_flag_set(*, reviewer: Membership, message_id: int, flagged: bool, reason: str = "") -> Message:
    message = (
        Message.objects.select_related("conversation")
        .filter(pk=message_id, conversation__course_id=reviewer.course_id)
        .first()
    )
    if message is None:
        raise NotFound("No such message in this course.")
    open_flags = Flag.objects.filter(message=message, state__in=UNRESOLVED)
    if flagged and not open_flags.exists():
        if reason.strip():  # every teacher of the course reads it
            reason = scrubbing.text_scrub(conversation=message.conversation, text=reason.strip()).text
        flag_raise(
            message=message,
            category="teacher",
            reason=reason.strip() or "Flagged by a teacher.",
            urgent=False,
            raised_by=reviewer.person,
        )
        review_event_record(course_id=reviewer.course_id, actor=reviewer.person, action="flag", message_id=message.id)
    elif not flagged and open_flags.exists():
        flags_resolve_for_message(reviewer=reviewer, message=message, note="Unflagged on the conversation's review.")
        review_event_record(course_id=reviewer.course_id, actor=reviewer.person, action="unflag", message_id=message.id)
    return message
