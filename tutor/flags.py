"""Flag services (writes): a flag raised on a message (by a guardrail or a teacher), triaged by
the course's teachers. The queue's reads, the categories' labels and the filters are
tutor.selectors'.

A flag is `open` until a teacher acknowledges it (`acknowledged`: someone is on it) and then
resolves it (`resolved`); a resolved flag can be reopened. Every action carries an optional note
and is kept with who and when (`FlagAction`). Flags on a student's message and on a tutor reply
are triaged alike.

Urgent flags (self-harm, abuse) alert people (tutor.alerts): on commit, an email to the course's
alert addresses; a banner on every teacher launch until resolved; and, when nobody acknowledges
the flag within SAFETY_ESCALATE_AFTER_MINUTES, an email to the administrators.

"Unresolved" (open or acknowledged, `UNRESOLVED_FLAG_STATES`) is what the review overview's "open
flags" counter, the review list's `flagged` filter and the safety queue's default view all count.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tutor import alerts, scrubbing
from tutor.errors import DomainError, NotFound
from tutor.models import UNRESOLVED_FLAG_STATES, Flag, FlagAction, FlagState, Membership, Message, Person
from tutor.selectors import category_urgent
from tutor.services import review_event_record

logger = logging.getLogger(__name__)


NOTE_MAX_CHARS = 2000


class FlagStateConflict(DomainError):
    code = "flag_state_conflict"
    status = 409
    title = "This flag has changed"


# -- raising ----------------------------------------------------------------------------------------


def flag_raise(
    *,
    message: Message,
    category: str,
    reason: str,
    urgent: bool | None = None,
    raised_by: Person | None = None,
) -> Flag:
    """A flag on a message (the reason must already be scrubbed: every teacher reads it). An urgent
    one (by default: `category_urgent`) gets its escalation time and, once the
    transaction commits, its alerts: the email to the course's alert addresses, and the task that
    escalates it if it is still open then."""
    if urgent is None:
        urgent = category_urgent(category)
    delay = settings.SAFETY_ESCALATE_AFTER_MINUTES
    flag = Flag.objects.create(
        course_id=message.conversation.course_id,
        conversation=message.conversation,
        message=message,
        category=category,
        reason=reason[:300],
        urgent=urgent,
        raised_by=raised_by,
    )
    if urgent and delay > 0:
        flag.escalate_at = flag.created_at + timedelta(minutes=delay)
        flag.save(update_fields=["escalate_at"])
    if urgent:
        transaction.on_commit(lambda: alerts.flag_alerts_after_raise(flag_id=flag.id), robust=True)
    return flag


# -- triage -----------------------------------------------------------------------------------------

Action = FlagAction.Action
# action → (the states it applies to, the state it leaves; None: unchanged)
TRANSITIONS: dict[str, tuple[frozenset[str], str | None]] = {
    Action.ACKNOWLEDGE: (frozenset({FlagState.OPEN}), FlagState.ACKNOWLEDGED),
    Action.RESOLVE: (frozenset(UNRESOLVED_FLAG_STATES), FlagState.RESOLVED),
    # Whoever reopens a flag has seen it: it comes back acknowledged, and never escalates again.
    Action.REOPEN: (frozenset({FlagState.RESOLVED}), FlagState.ACKNOWLEDGED),
    Action.NOTE: (frozenset(FlagState.values), None),
}


def _note_scrubbed(*, flag: Flag, note: str) -> str:
    note = note.replace("\x00", "").strip()  # no database stores a NUL character
    if len(note) > NOTE_MAX_CHARS:
        raise DomainError(
            f"A note can be at most {NOTE_MAX_CHARS} characters long.", code="note_too_long", limit=NOTE_MAX_CHARS
        )
    # Every teacher of the course reads it: a name or a phone number typed in goes the way of the
    # messages' own (the conversation's context and the roster included).
    return scrubbing.text_scrub(conversation=flag.conversation, text=note).text if note else ""


def _transition(*, flag: Flag, action: str, new_state: str | None, actor: Person, note: str) -> None:
    now = timezone.now()
    if new_state is not None:
        flag.state = new_state
        if flag.acknowledged_at is None:  # resolving a flag acknowledges it too
            flag.acknowledged_at, flag.acknowledged_by = now, actor
        if new_state == FlagState.RESOLVED:
            flag.resolved_at, flag.resolved_by = now, actor
        else:
            flag.resolved_at, flag.resolved_by = None, None
        flag.save(update_fields=["state", "acknowledged_at", "acknowledged_by", "resolved_at", "resolved_by"])
    FlagAction.objects.create(flag=flag, action=action, state=flag.state, actor=actor, note=note)


@transaction.atomic
def flags_resolve_for_message(*, reviewer: Membership, message: Message, note: str) -> int:
    """The review page's "Unflag": resolves every unresolved flag of the message, each recorded in
    its history like the safety queue's own "Resolve" (the caller records the review event)."""
    unresolved = list(
        Flag.objects.select_for_update(of=("self",))
        .select_related("conversation")
        .filter(message=message, course_id=reviewer.course_id, state__in=UNRESOLVED_FLAG_STATES)
    )
    for flag in unresolved:
        _transition(
            flag=flag,
            action=Action.RESOLVE,
            new_state=FlagState.RESOLVED,
            actor=reviewer.person,
            note=_note_scrubbed(flag=flag, note=note),
        )
    return len(unresolved)


@transaction.atomic
def flag_act(*, reviewer: Membership, flag_id: int, action: str, note: str = "") -> Flag:
    """A teacher acknowledges, resolves or reopens a flag of their course, or adds a note to it."""
    flag = (
        Flag.objects.select_for_update(of=("self",))
        .select_related("conversation")
        .filter(pk=flag_id, course_id=reviewer.course_id)
        .first()
    )
    if flag is None:
        raise NotFound("No such flag in this course.")
    if action not in TRANSITIONS:
        raise DomainError(f"Unknown action {action!r}.", code="unknown_action", allowed=sorted(TRANSITIONS))
    applies_to, new_state = TRANSITIONS[action]
    if flag.state not in applies_to:
        raise FlagStateConflict(
            f"This flag is {flag.get_state_display().lower()} already: reload the page to see who changed it.",
            state=flag.state,
        )
    note = _note_scrubbed(flag=flag, note=note)
    if action == Action.NOTE and not note:
        raise DomainError("Write the note first.", code="empty_note")
    _transition(flag=flag, action=action, new_state=new_state, actor=reviewer.person, note=note)
    review_event_record(
        course_id=reviewer.course_id,
        actor=reviewer.person,
        action=f"flag_{action}",
        message_id=flag.message_id,
        flag_id=flag.id,
        state=flag.state,
    )
    return flag
