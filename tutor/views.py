"""Server-rendered pages of the tutor app."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from tutor import alerts, flags
from tutor.auth import launch_begin
from tutor.models import LearnerLevel, Role
from tutor.services import CourseEntry


def course_home(request: HttpRequest, *, entry: CourseEntry) -> HttpResponse:
    """The page a launch lands on. It carries the launch token for the page's API calls. A teacher's
    (or administrator's) shows the course's unresolved urgent flags first; a student's never does."""
    membership = entry.membership
    placement_id = entry.placement.id if entry.placement else None
    token = launch_begin(request, membership_id=membership.id, placement_id=placement_id)
    banner = []
    if membership.role in {Role.TEACHER, Role.ADMIN}:
        banner = flags.flags_for_banner(course_id=membership.course_id)
        alerts.flag_banner_record(flags=banner, person=membership.person)
    return render(
        request,
        "tutor/course_home.html",
        {
            "course": membership.course,
            "placement": entry.placement,
            "role": membership.role,
            "launch_token": token,
            "tool_title": settings.TOOL_TITLE,
            "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
            "levels": LearnerLevel.choices,
            "safety_banner": [(flag, flags.category_label(flag.category)) for flag in banner],
        },
    )
