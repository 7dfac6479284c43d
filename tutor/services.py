"""Writes of the tutor app (HackSoft-style services: keyword-only, typed)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tutor.models import Course, Membership, Person, Placement, Role


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
) -> CourseEntry:
    """Records a validated launch: the course, the placement (if any) and the person's role in it."""
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
    return CourseEntry(membership=membership, placement=placement)
