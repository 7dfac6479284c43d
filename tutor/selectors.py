"""Reads of the tutor app."""

from __future__ import annotations

from tutor.auth import Launched


def launched_profile(*, launched: Launched) -> dict:
    """What the launched page shows about the caller: role and course, no personal data."""
    from tutor.models import TutorSettings

    course = launched.membership.course
    consent = TutorSettings.objects.filter(course=course).values_list("training_consent", flat=True).first()
    return {
        "role": launched.role,
        "course": {"id": course.id, "title": course.title, "label": course.label},
        "placement_id": launched.placement_id,
        "training": {"course_allows": bool(consent), "opted_out": launched.membership.training_opt_out},
    }


def course_roster_names(*, course_id: int) -> list[str]:
    """Every name the LMS gave for this course's members: the scrubber's deny-list."""
    from tutor.models import MemberName

    names: list[str] = []
    for member in MemberName.objects.filter(membership__course_id=course_id).only(
        "full_name", "given_name", "family_name"
    ):
        names.extend(member.names)
    return names
