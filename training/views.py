"""Administrators' pages for training data and retraining (server-rendered, no JavaScript):
dataset exports and their files, training jobs with live progress and the loss curve, the
evaluation gate's numbers and sample replies, adapter versions, promote / reject / rollback.
They sit beside the teachers' review pages (same session, same access rules)."""

from __future__ import annotations

from pathlib import Path

from django import forms
from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from serving.adapters import AdapterError, adapter_rollback, adapter_rollback_target
from serving.models import AdapterVersion
from training.datasets import dataset_export, sibling_paths
from training.jobs import adapter_holds_erased_data, job_cancel, job_decide, training_job_start
from training.models import TrainingJob
from tutor.access import admin_check, page_reviewer
from tutor.errors import DomainError, NotFound


@require_POST
def review_export(request: HttpRequest, course_id: int) -> HttpResponse:
    reviewer = page_reviewer(request, course_id=course_id)
    admin_check(reviewer=reviewer)
    try:
        export = dataset_export(course=reviewer.course, requested_by=reviewer.person)
        notice = f"Dataset {export.id}: {export.train_examples} training and {export.eval_examples} held-out examples."
    except DomainError as exc:
        notice = exc.message
    return HttpResponseRedirect(reverse("review-course", args=[course_id]) + "?notice=" + notice)


@require_GET
def review_export_download(request: HttpRequest, course_id: int, export_id: int, part: str) -> HttpResponse:
    reviewer = page_reviewer(request, course_id=course_id)
    admin_check(reviewer=reviewer)
    export = reviewer.course.dataset_exports.filter(pk=export_id, status="ready").first()
    if export is None:
        raise NotFound("No such dataset (it may have been purged after an erasure).")
    train = Path(export.train_path)
    path = {"train": train, "eval": sibling_paths(train)[0], "report": sibling_paths(train)[1]}.get(part)
    if path is None or not path.exists():
        raise NotFound("That file of the dataset does not exist.")
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
def review_training(request: HttpRequest, course_id: int) -> HttpResponse:
    """Retraining for administrators: jobs with live progress and loss curves, the gate's
    numbers and sample replies, and the course's adapter versions."""
    reviewer = page_reviewer(request, course_id=course_id)
    admin_check(reviewer=reviewer)
    jobs = list(TrainingJob.objects.filter(course_id=course_id).order_by("-id")[:10])
    latest = jobs[0] if jobs else None
    chart = {}
    if latest:
        chart = _loss_chart(list(latest.metrics.values_list("step", "train_loss", "eval_loss")))
    return render(
        request,
        "training/training.html",
        {
            "tool_title": settings.TOOL_TITLE,
            "course": reviewer.course,
            "jobs": jobs,
            "latest": latest,
            "active": latest is not None and latest.state in TrainingJob.ACTIVE_STATES,
            "chart": chart,
            "gate": _gate_table(latest.evaluation or {}) if latest else {},
            "adapters": [
                (adapter, adapter_holds_erased_data(adapter=adapter))
                for adapter in AdapterVersion.objects.filter(course_id=course_id)
            ],
            # Roll back: offered whenever an adapter serves, its first included (the base model then serves).
            "serving": AdapterVersion.objects.filter(course_id=course_id, status=AdapterVersion.Status.ACTIVE).first(),
            "rollback_to": adapter_rollback_target(course_id=course_id),
            "notice": request.GET.get("notice", ""),
        },
    )


TRAINING_ACTIONS = ("retrain", "cancel", "promote", "reject", "rollback")


class TrainingActionForm(forms.Form):
    action = forms.ChoiceField(choices=[(name, name) for name in TRAINING_ACTIONS])
    job = forms.IntegerField(required=False, min_value=1)
    adapter = forms.IntegerField(required=False, min_value=1)


@require_POST
def review_training_action(request: HttpRequest, course_id: int) -> HttpResponse:
    """retrain | cancel | promote | reject | rollback, for administrators."""
    reviewer = page_reviewer(request, course_id=course_id)
    admin_check(reviewer=reviewer)
    form = TrainingActionForm(request.POST)
    if not form.is_valid():
        raise DomainError(
            "This training action could not be read: "
            + "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items()),
            code="invalid",
            fields=form.errors.get_json_data(),
        )
    action, job_id = form.cleaned_data["action"], form.cleaned_data["job"] or 0
    owned = reviewer.course.training_jobs.filter(pk=job_id).exists()
    try:
        if action == "retrain":
            job = training_job_start(course=reviewer.course, requested_by=reviewer.person)
            notice = f"Training job {job.pk} queued."
        elif action == "cancel" and owned:
            job_cancel(job_id=job_id)
            notice = f"Job {job_id} is being cancelled."
        elif action in {"promote", "reject"} and owned:
            job = job_decide(job_id=job_id, promote=action == "promote")
            notice = f"Job {job_id}: {job.get_state_display()}."
        elif action == "rollback":
            # the version the page showed serving
            serving = adapter_rollback(course_id=course_id, active_id=form.cleaned_data["adapter"])
            notice = f"Rolled back: {serving.name if serving else 'the base model'} serves the course now."
        else:
            raise NotFound("No such action or job.")
    except DomainError as exc:
        notice = exc.message
    except AdapterError as exc:
        notice = str(exc)
    return HttpResponseRedirect(reverse("review-training", args=[course_id]) + "?notice=" + notice)
