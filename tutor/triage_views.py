"""The safety queue, for a course's teachers (server-rendered; plain forms, no JavaScript needed).

    /review/<course>/flags/             the course's flags: filters, what was flagged (scrubbed),
                                        the alerts sent, the history, and the actions
    /review/<course>/flags/<id>/  POST  acknowledge, resolve, reopen or add a note

Reached like the review pages (the launched session made by the chat page's buttons); a student
gets 403, a teacher of another course 404 (tutor.access.review_page). Reads come from
tutor.selectors, writes go through tutor.flags and tutor.alerts (who, when, a note); the filters
are read by the API's own filter serializer, and notices travel as django.contrib.messages.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from tutor import alerts, flags, selectors
from tutor.access import review_page
from tutor.models import FlagAction, FlagState, Membership, Role
from tutor.selectors import FlagFilters
from tutor.serializers import FlagFiltersIn

STATE_TABS = [
    ("unresolved", "Unresolved"),
    (FlagState.OPEN, "Open"),
    (FlagState.ACKNOWLEDGED, "Acknowledged"),
    (FlagState.RESOLVED, "Resolved"),
    ("all", "All"),
]
ACTION_BUTTONS = {
    FlagState.OPEN: [(FlagAction.Action.ACKNOWLEDGE, "Acknowledge"), (FlagAction.Action.RESOLVE, "Resolve")],
    FlagState.ACKNOWLEDGED: [(FlagAction.Action.RESOLVE, "Resolve")],
    FlagState.RESOLVED: [(FlagAction.Action.REOPEN, "Reopen")],
}


def _query(filters: FlagFilters) -> dict[str, str]:
    urgent = {True: "1", False: "0"}.get(filters.urgent, "")
    query = {"state": filters.state, "category": filters.category, "urgent": urgent}
    return {name: value for name, value in query.items() if value}


DONE = {"acknowledge": "acknowledged", "resolve": "resolved", "reopen": "reopened", "note": "noted"}


@require_GET
@review_page()
def review_flags(request: HttpRequest, course_id: int, *, reviewer: Membership) -> HttpResponse:
    filters = FlagFiltersIn.read(request.GET, form=True)
    names = selectors.student_names(course_id=course_id)
    counts = selectors.flag_counts(course_id=course_id)
    rows = selectors.flag_queue(course_id=course_id, filters=filters)[:200]
    return render(
        request,
        "tutor/review/flags.html",
        {
            "tool_title": settings.TOOL_TITLE,
            "course": reviewer.course,
            "filters": filters,
            "query": urlencode(_query(filters)),
            "counts": counts,
            "tabs": [
                (key, label, urlencode({**_query(filters), "state": key}), counts[key]) for key, label in STATE_TABS
            ],
            "categories": [(c, selectors.category_label(c)) for c in selectors.flag_categories(course_id=course_id)],
            "items": [
                {
                    "flag": flag,
                    "label": selectors.category_label(flag.category),
                    "student_name": names.get(flag.conversation.person_id, ""),
                    "actions": [(action, names.get(action.actor_id, "")) for action in flag.actions.all()],
                    "buttons": ACTION_BUTTONS[flag.state],
                }
                for flag in rows
            ],
            "is_admin": reviewer.role == Role.ADMIN,
            "own_addresses": selectors.tutor_settings_get(course_id=course_id),
            "alert_addresses": selectors.course_alert_addresses(course_id=course_id),
            "escalation_addresses": selectors.course_escalation_addresses(course_id=course_id),
            "escalate_after_minutes": settings.SAFETY_ESCALATE_AFTER_MINUTES,
        },
    )


@require_POST
@review_page()
def review_flag_action(request: HttpRequest, course_id: int, flag_id: int, *, reviewer: Membership) -> HttpResponse:
    action = request.POST.get("action", "")
    flags.flag_act(reviewer=reviewer, flag_id=flag_id, action=action, note=request.POST.get("note", ""))
    messages.success(request, f"Flag {flag_id} {DONE[action]}.")
    back = urlencode(_query(FlagFiltersIn.read(request.POST, form=True)))
    return HttpResponseRedirect(f"{reverse('review-flags', args=[course_id])}?{back}#flag-{flag_id}")


@require_POST
@review_page()
def review_flag_addresses(request: HttpRequest, course_id: int, *, reviewer: Membership) -> HttpResponse:
    """Where the course's urgent flags are emailed (a disabled field, a teacher's escalation one, is not sent)."""
    alerts.alert_addresses_set(
        actor=reviewer,
        alert_emails=request.POST.get("alert_emails"),
        escalation_emails=request.POST.get("escalation_emails"),
    )
    messages.success(request, "Alert addresses saved.")
    return HttpResponseRedirect(reverse("review-flags", args=[course_id]))
