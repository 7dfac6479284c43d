"""The page an LTI launch lands on, rendered for lti.views (which speaks LTI and must not import
another app's views): the lti app validates the launch and records it (tutor.services.course_enter),
then hands the entry to `course_home`.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from tutor.alerts import flag_banner_show
from tutor.auth import launch_begin
from tutor.models import LearnerLevel, Role
from tutor.prompts import REPLY_LANGUAGES
from tutor.selectors import category_label, tutor_settings_get
from tutor.services import CourseEntry


def course_home(request: HttpRequest, *, entry: CourseEntry) -> HttpResponse:
    """It carries the launch token for the page's API calls. A teacher's (or administrator's) shows
    the course's unresolved urgent flags first; a student's never does."""
    membership = entry.membership
    placement_id = entry.placement.id if entry.placement else None
    token = launch_begin(request, membership_id=membership.id, placement_id=placement_id)
    banner = flag_banner_show(membership=membership) if membership.role in {Role.TEACHER, Role.ADMIN} else []
    tutor_settings = tutor_settings_get(course_id=membership.course_id)
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
            "reply_languages": REPLY_LANGUAGES,
            "safety_banner": [(flag, category_label(flag.category)) for flag in banner],
            # The chat's first screen and its notices (tutor/templates/tutor/_chat.html).
            "greeting": tutor_settings.greeting,
            "example_questions": [q for q in tutor_settings.example_questions or [] if isinstance(q, str) and q],
            "subject": tutor_settings.subject,
            "demo_notice": settings.DEMO_NOTICE,
            "training_allowed": tutor_settings.training_consent,
            "training_opted_out": membership.training_opt_out,
            "review_show_names": settings.REVIEW_SHOW_NAMES,
            "retention_days": settings.RETENTION_DAYS,
        },
    )
