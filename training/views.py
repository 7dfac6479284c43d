"""Administrators' pages for training data and retraining (server-rendered; forms work without
JavaScript): dataset exports and their files, training jobs with their progress and loss curve,
the evaluation gate's numbers and sample replies, adapter versions, promote / reject / rollback.
They sit beside the teachers' review pages (same session, same access rules: tutor.access's
`review_page`); a teacher is told what they can do instead and who can train. While the page is
open its script (training/static/training/training.js) fetches the live part and swaps it in
place, so an open log stays open. Each view parses its input, calls one service or selector, and
renders; what an action did is told on the next page through django.contrib.messages."""

from __future__ import annotations

import math

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from serving.adapters import AdapterError, adapter_rollback
from training.datasets import dataset_export
from training.jobs import job_cancel, job_decide, training_job_start
from training.models import TrainingJob
from training.selectors import course_admin_names, dataset_export_file, training_overview
from tutor.access import review_entry_open, review_page
from tutor.errors import DomainError, NotFound
from tutor.models import Membership, Role

# The training page's live part is fetched this often while a job runs, and less often otherwise
# (a job the schedule or another administrator starts still shows up).
POLL_ACTIVE_MS = 2000
POLL_IDLE_MS = 5000
# The loss chart's drawing box (SVG user units; it scales to the page's width).
CHART = {"width": 420, "height": 250, "left": 58, "right": 14, "top": 12, "bottom": 48}


@require_POST
@review_page(admin=True)
def review_export(request: HttpRequest, course_id: int, *, reviewer: Membership) -> HttpResponse:
    """Exports the course's dataset; the review page then says what came of it."""
    try:
        export = dataset_export(course=reviewer.course, requested_by=reviewer.person)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            f"Dataset {export.id}: {export.train_examples} training and {export.eval_examples} held-out examples.",
        )
    return redirect("review-course", course_id)


@require_GET
@review_page(admin=True)
def review_export_download(
    request: HttpRequest, course_id: int, export_id: int, part: str, *, reviewer: Membership
) -> HttpResponse:
    path = dataset_export_file(course_id=course_id, export_id=export_id, part=part)
    return FileResponse(path.open("rb"), as_attachment=True, filename=path.name)


def _nice_step(span: float, ticks: int = 5) -> float:
    """A round tick spacing (1, 2, 2.5 or 5 times a power of ten) giving about `ticks` ticks."""
    raw = span / ticks if span > 0 else 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude)


def _loss_chart(points: list[tuple[int, float | None, float | None]], *, evaluation: dict) -> dict:
    """The loss curve as SVG (server-rendered; the page's script only swaps it in): both axes with
    round ticks and titles, the training and held-out loss per step, and the gate's bar (the
    held-out loss the new adapter must reach) when the evaluation has one."""
    values = [v for _, train, held in points for v in (train, held) if v is not None]
    if not points or not values:
        return {}
    in_service = evaluation.get("active_loss") is not None
    reference = evaluation.get("active_loss") if in_service else evaluation.get("base_loss")
    bar = reference * (1 - settings.TRAINING_GATE_MARGIN) if reference is not None else None
    highest = max([*values, reference or 0])
    y_step = _nice_step(highest * 1.05)
    y_top = math.ceil(highest * 1.05 / y_step) * y_step
    steps = max(step for step, _, _ in points) or 1
    x_step = max(1, math.ceil(_nice_step(steps, ticks=5)))
    x_top = math.ceil(steps / x_step) * x_step
    left, right = CHART["left"], CHART["width"] - CHART["right"]
    top, bottom = CHART["top"], CHART["height"] - CHART["bottom"]

    def x(step: float) -> float:
        return round(left + step / x_top * (right - left), 1)

    def y(value: float) -> float:
        return round(bottom - value / y_top * (bottom - top), 1)

    def series(index: int) -> list[tuple[float, float]]:
        return [(x(step), y(value)) for step, *pair in points if (value := pair[index]) is not None]

    train, held_out = series(0), series(1)
    return {
        **CHART,
        "plot": {
            "left": left,
            "right": right,
            "top": top,
            "bottom": bottom,
            "y_label_x": left - 6,
            "tick_end": bottom + 5,
            "x_label_y": bottom + 20,
            "middle_x": (left + right) / 2,
            "x_title_y": CHART["height"] - 4,
            "y_title_x": -(top + bottom) / 2,  # the y title is drawn rotated by -90°
        },
        "x_ticks": [(x(step), step) for step in range(0, x_top + 1, x_step)],
        "y_ticks": [(y(i * y_step), f"{i * y_step:.4g}") for i in range(round(y_top / y_step) + 1)],
        "train": " ".join(f"{px},{py}" for px, py in train),
        "held_out": " ".join(f"{px},{py}" for px, py in held_out),
        "held_out_dots": held_out,
        "bar": {"y": y(bar), "value": f"{bar:.4g}", "reference": f"{reference:.4g}"} if bar is not None else None,
        "last_train": next((pair[0] for _, *pair in reversed(points) if pair[0] is not None), None),
        "last_held_out": next((pair[1] for _, *pair in reversed(points) if pair[1] is not None), None),
    }


def _gate_table(evaluation: dict) -> dict:
    """The gate's numbers side by side (base model, adapter in service, new adapter), its verdict
    and reasons. The current tutor's reply scores sit under whichever of the first two serves now."""
    if not any(key in evaluation for key in ("candidate_loss", "replies", "samples_error")):
        return {}
    replies = evaluation.get("replies") or {}
    current, candidate = replies.get("current") or {}, replies.get("candidate") or {}
    in_service = evaluation.get("active_loss") is not None

    def row(label: str, key: str) -> tuple[str, list]:
        value = current.get(key)
        return label, [None, value, candidate.get(key)] if in_service else [value, None, candidate.get(key)]

    rows = [
        (
            "Held-out loss (lower is better)",
            [evaluation.get("base_loss"), evaluation.get("active_loss"), evaluation.get("candidate_loss")],
        )
    ]
    if replies:
        rows += [
            row("chrF against the teachers' replies (higher is better)", "chrf"),
            row("Sample replies that failed", "failed"),
            row("Sample replies that were empty", "empty"),
        ]
    return {
        "rows": rows,
        "verdict": evaluation.get("gate"),
        "samples_error": evaluation.get("samples_error", ""),
        "count": candidate.get("samples"),
        "metric": candidate.get("metric", ""),
        "errors": [
            *(f"new adapter: {e}" for e in candidate.get("errors", [])),
            *(f"current tutor: {e}" for e in current.get("errors", [])),
        ],
    }


def _failure(job: TrainingJob | None) -> dict:
    """A failed job's reason for the top of the page: its first paragraph is the plain-words
    reason (training.jobs writes it first), the rest (a process's last lines) is detail."""
    if job is None or job.state != TrainingJob.State.FAILED or not job.error:
        return {}
    reason, _, detail = job.error.strip().partition("\n")
    return {"job": job, "reason": reason, "detail": detail.strip()}


def _training_context(course_id: int) -> dict:
    overview = training_overview(course_id=course_id)
    latest = overview.latest
    evaluation = (latest.evaluation or {}) if latest else {}
    return {
        "jobs": overview.jobs,
        "latest": latest,
        "active": overview.active,
        # What the page's script compares between updates: a change drops the notices of the old state.
        "state_key": f"{latest.pk}:{latest.state}" if latest else "none",
        "poll_ms": POLL_ACTIVE_MS if overview.active else POLL_IDLE_MS,
        "failure": _failure(latest),
        "chart": _loss_chart(overview.loss_points, evaluation=evaluation),
        "gate": _gate_table(evaluation),
        "gate_margin": f"{settings.TRAINING_GATE_MARGIN:.0%}",
        "adapters": overview.adapters,
        # Roll back: offered whenever an adapter serves, its first included (the base model then serves).
        "serving": overview.serving,
        "rollback_to": overview.rollback_to,
    }


def _admins_only(request: HttpRequest, reviewer: Membership) -> HttpResponse:
    """A teacher on the training page: what they can do instead, and who can train."""
    count, names = course_admin_names(course_id=reviewer.course_id)
    context = {"tool_title": settings.TOOL_TITLE, "course": reviewer.course, "admin_count": count, "admin_names": names}
    return render(request, "training/admins_only.html", context, status=403)


@require_GET
@review_page()
def review_training(request: HttpRequest, course_id: int, *, reviewer: Membership) -> HttpResponse:
    """Retraining for administrators: jobs with live progress and loss curves, the gate's
    numbers and sample replies, and the course's adapter versions. The page's script fetches
    the live part (`review_training_live`) and swaps it in place while a job runs."""
    if reviewer.role != Role.ADMIN:
        return _admins_only(request, reviewer)
    context = {"tool_title": settings.TOOL_TITLE, "course": reviewer.course, **_training_context(course_id)}
    return render(request, "training/training.html", context)


@require_GET
@review_page(admin=True)
def review_training_live(request: HttpRequest, course_id: int, *, reviewer: Membership) -> HttpResponse:
    """The training page's live part alone, for the page's script to swap in."""
    context = {"course": reviewer.course, **_training_context(course_id)}
    return render(request, "training/_live.html", context)


@csrf_exempt  # the launch token in the body is the credential; the Origin check stops login CSRF
@require_POST
def review_training_enter(request: HttpRequest) -> HttpResponse:
    """The landing page's "Open the training page" (POST t=<launch token>): a review session for
    the launch, as tutor's review entry makes one, then the course's training page. The token
    travels in the body, never in a URL (access logs and history keep URLs)."""
    launched, reviewer = review_entry_open(
        request,
        refusal="The training page can only be opened from the tutor's own page. Open the tutor from your course "
        "and choose “Open the training page”.",
    )
    if reviewer.role != Role.ADMIN:
        return _admins_only(request, reviewer)
    return redirect("review-training", launched.course_id)


TRAINING_ACTIONS = ("retrain", "cancel", "promote", "reject", "rollback")


class TrainingActionForm(forms.Form):
    action = forms.ChoiceField(choices=[(name, name) for name in TRAINING_ACTIONS])
    job = forms.IntegerField(required=False, min_value=1)
    adapter = forms.IntegerField(required=False, min_value=1)


@require_POST
@review_page(admin=True)
def review_training_action(request: HttpRequest, course_id: int, *, reviewer: Membership) -> HttpResponse:
    """retrain | cancel | promote | reject | rollback, for administrators."""
    form = TrainingActionForm(request.POST)
    if not form.is_valid():
        raise DomainError(
            "This training action could not be read: "
            + "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items()),
            code="invalid",
            fields=form.errors.get_json_data(),
        )
    action, job_id = form.cleaned_data["action"], form.cleaned_data["job"]
    try:
        if action == "retrain":
            job = training_job_start(course=reviewer.course, requested_by=reviewer.person)
            notice = f"Training job {job.pk} queued."
        elif action == "cancel" and job_id:
            job_cancel(course_id=course_id, job_id=job_id)
            notice = f"Job {job_id} is being cancelled."
        elif action in {"promote", "reject"} and job_id:
            job = job_decide(course_id=course_id, job_id=job_id, promote=action == "promote")
            notice = f"Job {job_id}: {job.get_state_display()}."
        elif action == "rollback":
            # the version the page showed serving
            serving = adapter_rollback(course_id=course_id, active_id=form.cleaned_data["adapter"])
            notice = f"Rolled back: {serving.name if serving else 'the base model'} serves the course now."
        else:
            raise NotFound("No such action or job.")
    except DomainError as exc:
        messages.error(request, exc.message)
    except AdapterError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, notice)
    return redirect("review-training", course_id)
