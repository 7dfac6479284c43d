"""Administrators' pages for training data and retraining (server-rendered, no JavaScript):
dataset exports and their files, training jobs with live progress and the loss curve, the
evaluation gate's numbers and sample replies, adapter versions, promote / reject / rollback.
They sit beside the teachers' review pages (same session, same access rules: tutor.access's
`review_page(admin=True)`). Each view parses its input, calls one service or selector, and renders;
what an action did is told on the next page through django.contrib.messages."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from serving.adapters import AdapterError, adapter_rollback
from training.datasets import dataset_export
from training.jobs import job_cancel, job_decide, training_job_start
from training.selectors import dataset_export_file, training_overview
from tutor.access import review_page
from tutor.errors import DomainError, NotFound
from tutor.models import Membership


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


def _loss_chart(points: list[tuple[int, float | None, float | None]], width: int = 600, height: int = 160) -> dict:
    """SVG polylines of the training and held-out loss per step (server-rendered, no JavaScript)."""
    values = [v for _, train, held in points for v in (train, held) if v is not None]
    if not points or not values:
        return {}
    top, steps = max(values) * 1.05, max(step for step, _, _ in points) or 1

    def line(index: int) -> str:
        return " ".join(
            f"{step / steps * width:.1f},{height - value / top * height:.1f}"
            for step, *pair in points
            if (value := pair[index]) is not None
        )

    return {"width": width, "height": height, "train": line(0), "eval": line(1), "top": round(top, 3)}


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


@require_GET
@review_page(admin=True)
def review_training(request: HttpRequest, course_id: int, *, reviewer: Membership) -> HttpResponse:
    """Retraining for administrators: jobs with live progress and loss curves, the gate's
    numbers and sample replies, and the course's adapter versions."""
    overview = training_overview(course_id=course_id)
    latest = overview.latest
    return render(
        request,
        "training/training.html",
        {
            "tool_title": settings.TOOL_TITLE,
            "course": reviewer.course,
            "jobs": overview.jobs,
            "latest": latest,
            "active": overview.active,
            "chart": _loss_chart(overview.loss_points),
            "gate": _gate_table(latest.evaluation or {}) if latest else {},
            "adapters": overview.adapters,
            # Roll back: offered whenever an adapter serves, its first included (the base model then serves).
            "serving": overview.serving,
            "rollback_to": overview.rollback_to,
        },
    )


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
