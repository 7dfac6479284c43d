"""Reads of the tutor app."""

from __future__ import annotations

from tutor.auth import Launched


def launched_profile(*, launched: Launched) -> dict:
    """What the launched page shows about the caller: role and course, no personal data."""
    course = launched.membership.course
    return {
        "role": launched.role,
        "course": {"id": course.id, "title": course.title, "label": course.label},
        "placement_id": launched.placement_id,
    }
