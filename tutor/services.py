"""Writes of the tutor app's core: courses and people as launches record them, the course's tutor
settings (and trying them out, which writes nothing), consent, erasure, retention, and the review
log (HackSoft-style services: keyword-only, typed). The other services are per domain (tutor.chat,
tutor.review, tutor.flags, tutor.alerts); every read is in tutor.selectors."""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from serving.client import ModelServerUnavailable, chat_complete, model_for_course
from tutor import guardrails
from tutor.auth import Launched
from tutor.errors import ChatModelUnavailable, ConversationHeldForSafety, Forbidden, MessageTooLong
from tutor.models import (
    UNRESOLVED_FLAG_STATES,
    Conversation,
    Course,
    ErasureRecord,
    Flag,
    MemberName,
    Membership,
    Person,
    Placement,
    ReviewEvent,
    Role,
    TutorSettings,
)
from tutor.selectors import TutorDraft, draft_prompt_fit

logger = logging.getLogger(__name__)


def pseudonym_for(*, issuer: str, subject: str) -> str:
    """The keyed hash that stands for an LMS user everywhere in our tables."""
    message = f"{issuer}\x00{subject}".encode()
    return hmac.new(settings.PSEUDONYM_SECRET.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class CourseEntry:
    membership: Membership
    placement: Placement | None


@transaction.atomic
def course_enter(
    *,
    issuer: str,
    deployment_id: str,
    subject: str,
    role: Role,
    context_id: str,
    context_title: str = "",
    context_label: str = "",
    resource_link_id: str | None = None,
    resource_link_title: str = "",
    full_name: str = "",
    given_name: str = "",
    family_name: str = "",
) -> CourseEntry:
    """Records a validated launch: the course, the placement (if any), the person's role in it
    and, in the separate names table, the name the LMS sent (if it sent one)."""
    course, _ = Course.objects.update_or_create(
        lms_issuer=issuer,
        lms_context_id=context_id,
        defaults={"lms_deployment_id": deployment_id, "title": context_title, "label": context_label},
    )
    placement = None
    if resource_link_id is not None:
        placement, _ = Placement.objects.update_or_create(
            course=course, lms_resource_link_id=resource_link_id, defaults={"title": resource_link_title}
        )
    person, _ = Person.objects.get_or_create(pseudonym=pseudonym_for(issuer=issuer, subject=subject))
    membership, _ = Membership.objects.update_or_create(
        person=person, course=course, defaults={"role": role, "last_launch_at": timezone.now()}
    )
    if full_name or given_name or family_name:
        MemberName.objects.update_or_create(
            membership=membership,
            defaults={"full_name": full_name[:300], "given_name": given_name[:150], "family_name": family_name[:150]},
        )
    return CourseEntry(membership=membership, placement=placement)


def _teacher_check(launched: Launched) -> None:
    if launched.role not in {Role.TEACHER, Role.ADMIN}:
        raise Forbidden("Only the course's teachers can change its tutor.")


@transaction.atomic
def tutor_settings_update(*, launched: Launched, **fields) -> TutorSettings:
    """A teacher or admin changes the launched course's tutor (the fields of TutorSettingsIO)."""
    _teacher_check(launched)
    tutor_settings, _ = TutorSettings.objects.select_for_update().get_or_create(course_id=launched.course_id)
    for name, value in fields.items():
        setattr(tutor_settings, name, value)
    tutor_settings.save()
    return tutor_settings


def placement_instructions_set(*, launched: Launched, placement: Placement, instructions: str) -> Placement:
    """A teacher or admin gives one placement of the launched course its own instructions."""
    _teacher_check(launched)
    if placement.course_id != launched.course_id:
        raise Forbidden("Only the course's teachers can change its tutor.")
    placement.instructions = instructions
    placement.save(update_fields=["instructions", "updated_at"])
    return placement


@dataclass(frozen=True)
class TriedReply:
    text: str
    screened: str  # the guardrail category that replaced the reply (or answered the message); "" if none
    model: str
    fits: bool = True  # False: the draft's prompt leaves the message no room, `text` says what a student is told


def _try_unavailable() -> ChatModelUnavailable:
    # The client's own words say the message is saved, which here it is not.
    return ChatModelUnavailable(
        "The tutor's model server is not answering right now; try again in a moment (nothing was saved).", retry=True
    )


def tutor_settings_try(*, launched: Launched, draft: TutorDraft, content: str) -> TriedReply:
    """What the tutor would answer a student under `draft`, with the guardrails a student's
    message goes through, and nothing recorded: no conversation, message, system prompt, flag,
    alert or dataset line, and no log line with the text (so a self-harm message gets the safe
    reply, and raises no flag: there is nobody to look after)."""
    _teacher_check(launched)
    content = content.strip()
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise MessageTooLong(
            f"Your message is {len(content)} characters long; the limit is {settings.CHAT_MAX_MESSAGE_CHARS}.",
            limit=settings.CHAT_MAX_MESSAGE_CHARS,
        )
    reply_language = draft.tutor_settings.reply_language
    model = model_for_course(course_id=launched.course_id)
    verdict = guardrails.screen_input(content, reply_language=reply_language)
    if verdict is not None:
        return TriedReply(text=verdict.safe_reply, screened=verdict.category, model=model)
    try:
        messages = draft_prompt_fit(draft=draft, content=content)
    except MessageTooLong as exc:
        # A finding about the draft, not a refusal of the try: the teacher sees what a student would.
        return TriedReply(text=exc.message, screened="", model=model, fits=False)
    except ModelServerUnavailable as exc:
        raise _try_unavailable() from exc
    try:
        answer = chat_complete(model=model, messages=messages, course_id=launched.course_id)
    except ModelServerUnavailable as exc:
        raise _try_unavailable() from exc
    verdict = guardrails.screen_output(
        answer.content, system_prompt=messages[0]["content"], reply_language=reply_language
    )
    if verdict is not None:
        return TriedReply(text=verdict.safe_reply, screened=verdict.category, model=answer.model)
    return TriedReply(text=answer.content, screened="", model=answer.model)


def review_event_record(
    *, course_id: int, actor: Person | None, action: str, message_id: int | None = None, **detail
) -> ReviewEvent:
    """Who did what, and when, on a course's review (the audit trail of every review write)."""
    return ReviewEvent.objects.create(
        course_id=course_id, actor=actor, action=action, message_id=message_id, detail=detail
    )


@transaction.atomic
def training_consent_set(*, course: Course, actor: Membership, allowed: bool) -> TutorSettings:
    """A teacher or admin allows (or stops) the use of the course's conversations for training."""
    if actor.course_id != course.id or actor.role not in {Role.TEACHER, Role.ADMIN}:
        raise Forbidden("Only the course's teachers and administrators can change this.")
    tutor_settings, _ = TutorSettings.objects.select_for_update().get_or_create(course=course)
    if tutor_settings.training_consent != allowed:
        tutor_settings.training_consent = allowed
        tutor_settings.training_consent_changed_by = actor.person
        tutor_settings.training_consent_changed_at = timezone.now()
        tutor_settings.save()
        review_event_record(course_id=course.id, actor=actor.person, action="training_consent", allowed=allowed)
    return tutor_settings


def training_opt_out_set(*, membership: Membership, opted_out: bool) -> Membership:
    """A student's own choice: their conversations in this course never reach a dataset."""
    if membership.training_opt_out != opted_out:
        membership.training_opt_out = opted_out
        membership.training_opt_out_changed_at = timezone.now()
        membership.save(update_fields=["training_opt_out", "training_opt_out_changed_at"])
    return membership


def _delete_counted(querysets: list[QuerySet]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for queryset in querysets:
        _, per_model = queryset.delete()
        for label, number in per_model.items():
            if number:
                counts[label] = counts.get(label, 0) + number
    return counts


@transaction.atomic
def person_erase(*, issuer: str, subject: str, via: str) -> dict[str, int] | None:
    """Removes everything about one LMS user: their pseudonymous person, memberships, name,
    conversations, messages, ratings, flags and reviews of their messages, dataset lines
    (exports that held them are purged). Returns the rows deleted per table, or None
    when we hold nothing about them."""
    person = Person.objects.filter(pseudonym=pseudonym_for(issuer=issuer, subject=subject)).first()
    if person is None:
        return None
    counts = _delete_counted([Person.objects.filter(pk=person.pk)])
    ErasureRecord.objects.create(requested_via=via, rows_deleted=counts)
    logger.info("erasure via %s removed %s", via, counts)
    return counts


@transaction.atomic
def conversation_delete(*, conversation: Conversation) -> dict[str, int]:
    """A student deletes one of their conversations, as erasure would: its messages, ratings,
    reviews, flags (with their triage history and alerts) and dataset lines (exports that held
    them are purged). Refused while an urgent flag on it is unresolved: that is a safeguarding
    matter the school must be able to see through (docs/privacy.md)."""
    urgent = Flag.objects.filter(conversation=conversation, urgent=True, state__in=UNRESOLVED_FLAG_STATES)
    if urgent.exists():
        raise ConversationHeldForSafety(
            "This conversation cannot be deleted yet: something in it was passed to your teachers to check, "
            "and it stays until they have. You can delete it after that."
        )
    counts = _delete_counted([Conversation.objects.filter(pk=conversation.pk)])
    ErasureRecord.objects.create(requested_via="student_delete", rows_deleted=counts)
    logger.info("a student deleted conversation %s: %s", conversation.pk, counts)
    return counts


@transaction.atomic
def conversations_expire(*, now=None) -> dict[str, int]:
    """Deletes conversations idle for longer than RETENTION_DAYS (0 keeps them)."""
    if settings.RETENTION_DAYS <= 0:
        return {}
    cutoff = (now or timezone.now()) - timedelta(days=settings.RETENTION_DAYS)
    counts = _delete_counted([Conversation.objects.filter(updated_at__lt=cutoff)])
    if counts:
        ErasureRecord.objects.create(requested_via="retention", rows_deleted=counts)
        logger.info("retention removed %s", counts)
    return counts
