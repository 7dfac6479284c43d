"""Review services (writes): a teacher's ratings, corrections, approval and flags on a course's
messages, each recorded as a ReviewEvent with who and when. The review screens' reads are
tutor.selectors'; who may review is tutor.access's.

Teachers see the scrubbed copy of every message: what they approve is exactly what
a dataset will contain.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from tutor import scrubbing
from tutor.flags import flag_raise, flags_resolve_for_message
from tutor.models import UNRESOLVED_FLAG_STATES, Flag, Membership, Message, ReplyReview, ReviewDecision
from tutor.selectors import review_message_get, review_pending_reply_ids, review_reply_get
from tutor.services import review_event_record

RATING_FIELDS = ("helpful", "correct", "pedagogically_sound", "age_appropriate")


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
    message = review_reply_get(course_id=reviewer.course_id, message_id=message_id)
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


BULK_DECISIONS = (ReviewDecision.APPROVED, ReviewDecision.REJECTED)


@transaction.atomic
def replies_bulk_decide(*, reviewer: Membership, conversation_ids: list[int], decision: str) -> int:
    """Approves or rejects every undecided reply of the chosen conversations of the course, each
    as a single decision is (its own audit entry); a reply already approved or rejected keeps its
    decision. Returns how many replies were decided."""
    if decision not in BULK_DECISIONS:
        raise ValueError(f"not a bulk decision: {decision}")
    message_ids = review_pending_reply_ids(course_id=reviewer.course_id, conversation_ids=conversation_ids)
    for message_id in message_ids:
        reply_review_update(reviewer=reviewer, message_id=message_id, decision=decision)
    return len(message_ids)


@transaction.atomic
def message_flag_set(*, reviewer: Membership, message_id: int, flagged: bool, reason: str = "") -> Message:
    """A teacher flags a message of their course (with a reason, scrubbed) or resolves its flags."""
    message = review_message_get(course_id=reviewer.course_id, message_id=message_id)
    open_flags = Flag.objects.filter(message=message, state__in=UNRESOLVED_FLAG_STATES)
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


@transaction.atomic
def reply_review_patch(
    *,
    reviewer: Membership,
    message_id: int,
    flagged: bool | None = None,
    ratings: dict[str, bool | None] | None = None,
    correction: str | None = None,
    decision: str | None = None,
) -> Message:
    """The review API's partial update: flags or unflags the message (`flagged`), and reviews it
    as `reply_review_update` does; a request with `flagged` alone leaves the review as it is.
    Returns the message as the review screens show it."""
    if flagged is not None:
        message_flag_set(reviewer=reviewer, message_id=message_id, flagged=flagged)
    if ratings or correction is not None or decision is not None or flagged is None:
        reply_review_update(
            reviewer=reviewer, message_id=message_id, ratings=ratings, correction=correction, decision=decision
        )
    return review_message_get(course_id=reviewer.course_id, message_id=message_id)
