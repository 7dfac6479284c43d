"""Alert services (writes) about urgent flags: the email to the course's alert addresses, the banner on teachers'
launches, the escalation to the administrators. Every alert is recorded (`FlagAlert`).

Addresses: the LMS shares no email with the tutor (docs/privacy.md), so nobody is emailed unless
an address was typed in for the purpose: a course's teachers set its alert addresses and its
administrators its escalation addresses (on its safety queue, stored with its TutorSettings), and a deployment can
add its own for every course (SAFETY_ALERT_EMAILS, SAFETY_ADMIN_EMAILS). A student's address is
never used. An email names no student and quotes only the flagged message's scrubbed copy; the
rest is on the safety queue it links to, which only the course's teachers can open.

The addresses are read by tutor.selectors; the escalation task is queued by its name
("tutor.tasks.flag_escalate"), so services never import tasks.
"""

from __future__ import annotations

import logging
import re

from celery import signature
from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from tutor.errors import DomainError, Forbidden
from tutor.models import Flag, FlagAlert, FlagState, Membership, Role, TutorSettings
from tutor.selectors import (
    ADDRESS_SEPARATORS,
    alert_addresses_split,
    category_label,
    course_alert_addresses,
    course_escalation_addresses,
    flag_for_alert,
    flags_escalation_due,
    flags_for_banner,
)
from tutor.services import review_event_record

logger = logging.getLogger(__name__)

EXCERPT_CHARS = 300

# One address: a dot-atom local part and a domain of letter-digit-hyphen labels ending in a
# letter-led top-level label. The API's schema states the same pattern (tutor/api.py), so what it
# documents as valid is exactly what is accepted.
ADDRESS = (
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
SEPARATORS = ADDRESS_SEPARATORS
# Addresses with separators between them, separators alone, or nothing (which clears them).
ADDRESS_LIST = rf"{SEPARATORS}*{ADDRESS}(?:{SEPARATORS}+{ADDRESS})*{SEPARATORS}*|{SEPARATORS}*"
ESCALATE_TASK = "tutor.tasks.flag_escalate"


class InvalidAlertAddress(DomainError):
    code = "invalid_email"
    status = 400


# -- addresses --------------------------------------------------------------------------------------


def alert_addresses_parse(text: str) -> list[str]:
    """Addresses separated by commas, semicolons, spaces or new lines; each must be one."""
    if not re.fullmatch(ADDRESS_LIST, text):
        bad = next((part for part in alert_addresses_split(text) if not re.fullmatch(ADDRESS, part)), text)
        raise InvalidAlertAddress(f"{bad[:100]!r} is not an email address.", address=bad[:100])
    return alert_addresses_split(text)


@transaction.atomic
def alert_addresses_set(
    *, actor: Membership, alert_emails: str | None = None, escalation_emails: str | None = None
) -> TutorSettings:
    """A course's teachers set where its urgent flags are emailed; only its administrators set
    where they escalate (a teacher must not be able to silence the escalation of their own course)."""
    if actor.role not in {Role.TEACHER, Role.ADMIN}:
        raise Forbidden("Only the course's teachers can change where its safety alerts go.")
    tutor_settings, _ = TutorSettings.objects.select_for_update().get_or_create(course_id=actor.course_id)
    changes: dict[str, int] = {}
    for field, text in (("safety_alert_emails", alert_emails), ("safety_escalation_emails", escalation_emails)):
        if text is None:
            continue
        value = ", ".join(alert_addresses_parse(text))
        if value == getattr(tutor_settings, field):
            continue
        if field == "safety_escalation_emails" and actor.role != Role.ADMIN:
            raise Forbidden("Only the course's administrators can change where unacknowledged alerts escalate.")
        setattr(tutor_settings, field, value)
        changes[field] = len(value.split(", ")) if value else 0
    if changes:
        tutor_settings.save(update_fields=[*changes, "updated_at"])
        review_event_record(course_id=actor.course_id, actor=actor.person, action="alert_addresses", **changes)
    return tutor_settings


# -- emails -----------------------------------------------------------------------------------------


def queue_url(*, flag: Flag) -> str:
    path = reverse("review-flags", args=[flag.course_id])
    return f"{settings.PUBLIC_BASE_URL}{path}?state=all#flag-{flag.id}"


def _excerpt(flag: Flag) -> str:
    text = " ".join((flag.message.content_scrubbed or "").split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1].rstrip() + "…"


def _email(*, flag: Flag, kind: str, recipients: list[str]) -> EmailMessage:
    escalation = kind == FlagAlert.Kind.ESCALATION
    context = {
        "flag": flag,
        "course": flag.course,
        "category": category_label(flag.category),
        "sender": "student's message" if flag.message.sender == "user" else "tutor's reply",
        "excerpt": _excerpt(flag),
        "student": flag.conversation.person.pseudonym[:8],
        "url": queue_url(flag=flag),
        "escalate_after_minutes": (
            round((flag.escalate_at - flag.created_at).total_seconds() / 60, 1) if flag.escalate_at else None
        ),
        "tool_title": settings.TOOL_TITLE,
    }
    template = "tutor/email/flag_escalation.txt" if escalation else "tutor/email/flag_alert.txt"
    course = " ".join(str(flag.course).split())  # an LMS's title may hold a line break: not in a header
    what = "Not acknowledged" if escalation else "Urgent"
    subject = f"[{settings.TOOL_TITLE}] {what}: {context['category'].lower()} in {course}"
    return EmailMessage(subject=subject, body=render_to_string(template, context), to=recipients)


def flag_email_send(*, flag: Flag, kind: str, recipients: list[str]) -> FlagAlert:
    """Sends one alert email and records it: sent, skipped (no address is set) or failed (the
    error's type only: an SMTP error can quote the message)."""
    if not recipients:
        what = "escalation" if kind == FlagAlert.Kind.ESCALATION else "alert"
        logger.warning("urgent flag %s: no %s address is set for course %s", flag.id, what, flag.course_id)
        return FlagAlert.objects.create(flag=flag, kind=kind, status=FlagAlert.Status.SKIPPED)
    try:
        _email(flag=flag, kind=kind, recipients=recipients).send()
    except Exception as exc:  # SMTP, DNS, TLS, a full disk: recorded, and the banner still shows it
        logger.exception("urgent flag %s: the %s email failed", flag.id, kind)
        return FlagAlert.objects.create(
            flag=flag, kind=kind, status=FlagAlert.Status.FAILED, recipients=recipients, error=type(exc).__name__
        )
    logger.info("urgent flag %s: %s email sent to %d address(es)", flag.id, kind, len(recipients))
    return FlagAlert.objects.create(flag=flag, kind=kind, status=FlagAlert.Status.SENT, recipients=recipients)


def flag_alerts_after_raise(*, flag_id: int) -> None:
    """Run once an urgent flag is committed: schedule its escalation, email the course's alert
    addresses. Neither may fail the student's request: a lost escalation task is made up for by
    the periodic sweep, a failed email is recorded and the banner still shows the flag."""
    flag = flag_for_alert(flag_id=flag_id)
    if flag is None:
        return
    if flag.escalate_at is not None:
        try:
            signature(ESCALATE_TASK, args=[flag.id]).apply_async(eta=flag.escalate_at)
        except Exception:
            logger.exception("urgent flag %s: the escalation task was not queued; the sweep will escalate it", flag.id)
    flag_email_send(flag=flag, kind=FlagAlert.Kind.EMAIL, recipients=course_alert_addresses(course_id=flag.course_id))


# -- escalation -------------------------------------------------------------------------------------


def flag_escalate(*, flag_id: int, now=None) -> bool:
    """Escalates an urgent flag that is still open past its escalation time; anything else (not
    due yet, acknowledged, already escalated, gone) does nothing. The guarded update claims it, so
    a task delivered twice, or the sweep running beside it, emails once. A failed email gives the
    claim back, and the next sweep tries again."""
    now = now or timezone.now()
    claimed = Flag.objects.filter(
        pk=flag_id, urgent=True, state=FlagState.OPEN, escalated_at__isnull=True, escalate_at__lte=now
    ).update(escalated_at=now)
    if not claimed:
        return False
    flag = flag_for_alert(flag_id=flag_id)
    alert = flag_email_send(
        flag=flag, kind=FlagAlert.Kind.ESCALATION, recipients=course_escalation_addresses(course_id=flag.course_id)
    )
    if alert.status == FlagAlert.Status.FAILED:
        Flag.objects.filter(pk=flag_id, escalated_at=now).update(escalated_at=None)
        return False
    return True


def flags_escalate_due(*, now=None) -> int:
    """The periodic sweep: escalates every flag due; returns how many it escalated."""
    now = now or timezone.now()
    return sum(flag_escalate(flag_id=flag_id, now=now) for flag_id in flags_escalation_due(now=now))


# -- banner -----------------------------------------------------------------------------------------


def flag_banner_show(*, membership: Membership) -> list[Flag]:
    """The urgent flags a teacher's (or administrator's) launch shows, recorded as shown to them."""
    flags = flags_for_banner(course_id=membership.course_id)
    FlagAlert.objects.bulk_create(
        [
            FlagAlert(flag=flag, kind=FlagAlert.Kind.BANNER, status=FlagAlert.Status.SHOWN, person=membership.person)
            for flag in flags
        ]
    )
    return flags
