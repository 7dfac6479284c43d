"""The safety queue, for a course's teachers (server-rendered; plain forms, no JavaScript needed).

    /review/<course>/flags/             the course's flags: filters, what was flagged (scrubbed),
                                        the alerts sent, the history, and the actions
    /review/<course>/flags/<id>/  POST  acknowledge, resolve, reopen or add a note

Reached like the review pages (the launched session made by the chat page's buttons); a student
gets 403, a teacher of another course 404. Writes go through tutor.flags (who, when, a note).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from tutor import alerts, flags, review
from tutor.access import page_reviewer
from tutor.models import FlagAction, FlagState, Role

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


def _filters(params) -> flags.FlagFilters:
    state = params.get("state") or "unresolved"
    return flags.FlagFilters(
        state=state if state in flags.STATE_FILTERS else "unresolved",
        category=category if flags.CATEGORY_PATTERN.fullmatch(category := params.get("category", "")) else "",
        urgent={"1": True, "0": False}.get(params.get("urgent", "")),
    )


def _query(filters: flags.FlagFilters) -> dict[str, str]:
    urgent = {True: "1", False: "0"}.get(filters.urgent, "")
    query = {"state": filters.state, "category": filters.category, "urgent": urgent}
    return {name: value for name, value in query.items() if value}


DONE = {"acknowledge": "acknowledged", "resolve": "resolved", "reopen": "reopened", "note": "noted"}


def _notice(done: str) -> str:
    if done == "addresses":
        return "Alert addresses saved."
    flag_id, _, action = done.partition(":")
    return f"Flag {flag_id} {DONE[action]}." if flag_id.isdigit() and action in DONE else ""


@require_GET
def review_flags(request: HttpRequest, course_id: int) -> HttpResponse:
    reviewer = page_reviewer(request, course_id=course_id)
    filters = _filters(request.GET)
    names = review.student_names(course_id=course_id)
    counts = flags.flag_counts(course_id=course_id)
    rows = flags.flag_queue(course_id=course_id, filters=filters)[:200]
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
            "categories": [(c, flags.category_label(c)) for c in flags.flag_categories(course_id=course_id)],
            "items": [
                {
                    "flag": flag,
                    "label": flags.category_label(flag.category),
                    "student_name": names.get(flag.conversation.person_id, ""),
                    "actions": [(action, names.get(action.actor_id, "")) for action in flag.actions.all()],
                    "buttons": ACTION_BUTTONS[flag.state],
                }
                for flag in rows
            ],
            "is_admin": reviewer.role == Role.ADMIN,
            "own_addresses": alerts.alert_addresses_get(course_id=course_id),
            "alert_addresses": alerts.course_alert_addresses(course_id=course_id),
            "escalation_addresses": alerts.course_escalation_addresses(course_id=course_id),
            "escalate_after_minutes": settings.SAFETY_ESCALATE_AFTER_MINUTES,
            "notice": _notice(request.GET.get("done", "")),
        },
    )


@require_POST
def review_flag_action(request: HttpRequest, course_id: int, flag_id: int) -> HttpResponse:
    reviewer = page_reviewer(request, course_id=course_id)
    flags.flag_act(
        reviewer=reviewer, flag_id=flag_id, action=request.POST.get("action", ""), note=request.POST.get("note", "")
    )
    back = urlencode({**_query(_filters(request.POST)), "done": f"{flag_id}:{request.POST['action']}"})
    return HttpResponseRedirect(f"{reverse('review-flags', args=[course_id])}?{back}#flag-{flag_id}")


@require_POST
def review_flag_addresses(request: HttpRequest, course_id: int) -> HttpResponse:
    """Where the course's urgent flags are emailed (a disabled field, a teacher's escalation one, is not sent)."""
    reviewer = page_reviewer(request, course_id=course_id)
    alerts.alert_addresses_set(
        actor=reviewer,
        alert_emails=request.POST.get("alert_emails"),
        escalation_emails=request.POST.get("escalation_emails"),
    )
    return HttpResponseRedirect(f"{reverse('review-flags', args=[course_id])}?done=addresses")
