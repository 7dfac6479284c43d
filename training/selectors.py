"""Reads of the training app: jobs, their leases and timings, the courses due for retraining, a
dataset's files, and what the administrators' training page shows. Nothing here writes; the
services (training.jobs, training.schedule, training.datasets) write. Views, APIs and tasks call
one of these (or one service) and render what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import Count, Max
from django.utils import timezone

from serving.models import AdapterVersion
from serving.selectors import adapter_rollback_target
from training.estimates import throughput_latest
from training.models import DatasetExport, TrainingJob, sibling_paths
from tutor.errors import DomainError, NotFound
from tutor.models import Course, MemberName, Membership, ReplyReview, ReviewDecision, Role

RECENT_JOBS = 10


def training_job_get(*, course_id: int, job_id: int) -> TrainingJob:
    """The course's job (with its adapter); another course's, or none: NotFound."""
    job = TrainingJob.objects.select_related("adapter").filter(pk=job_id, course_id=course_id).first()
    if job is None:
        raise NotFound("No such training job in this course.")
    return job


def training_job_active(*, course_id: int) -> bool:
    """Whether the course has a job in progress (it holds the course's one training slot)."""
    return TrainingJob.objects.filter(course_id=course_id, state__in=TrainingJob.ACTIVE_STATES).exists()


def training_jobs_by_state() -> dict[str, int]:
    """How many training jobs are in each state, every state named (0 where none): /metrics."""
    counts = dict.fromkeys(TrainingJob.State.values, 0)
    for row in TrainingJob.objects.values("state").annotate(count=Count("pk")).order_by():
        counts[row["state"]] = row["count"]
    return counts


def job_lease_wait(*, job_id: int) -> float | None:
    """Seconds until the job's current lease runs out, when it is active and held; else None.
    A task redelivered while the lease holds (its worker may have just died) retries after it."""
    job = TrainingJob.objects.filter(pk=job_id, state__in=TrainingJob.ACTIVE_STATES).values("lease_until").first()
    if job is None or job["lease_until"] is None:
        return None
    return max((job["lease_until"] - timezone.now()).total_seconds(), 0.0) + 1.0


def job_evaluation_seconds(*, job_id: int) -> float:
    """The gate's evaluation after training: as last measured for the base model, else as the
    export estimated it."""
    job = TrainingJob.objects.filter(pk=job_id).values("dataset__base_model", "dataset__report").first()
    if not job or not job["dataset__base_model"]:
        return 0.0
    profile = throughput_latest(base_model=job["dataset__base_model"])
    if profile and profile.evaluation_seconds:
        return profile.evaluation_seconds
    return float(((job["dataset__report"] or {}).get("estimate") or {}).get("evaluation_seconds") or 0.0)


def courses_due_for_retraining() -> list[int]:
    """Courses that allow training, have no active job, and have at least
    TRAINING_RETRAIN_MIN_NEW_EXAMPLES replies approved since their last job was created."""
    due = []
    busy = set(TrainingJob.objects.filter(state__in=TrainingJob.ACTIVE_STATES).values_list("course_id", flat=True))
    last_job = dict(
        TrainingJob.objects.values("course_id").annotate(last=Max("created_at")).values_list("course_id", "last")
    )
    for course_id in Course.objects.filter(tutor_settings__training_consent=True).values_list("id", flat=True):
        if course_id in busy:
            continue
        approved = ReplyReview.objects.filter(
            decision=ReviewDecision.APPROVED, message__conversation__course_id=course_id
        )
        if course_id in last_job:
            approved = approved.filter(reviewed_at__gt=last_job[course_id])
        if approved.count() >= settings.TRAINING_RETRAIN_MIN_NEW_EXAMPLES:
            due.append(course_id)
    return due


def dataset_exports_holding(*, conversation_id: int) -> list[int]:
    """The ready exports with a line of the conversation."""
    return list(
        DatasetExport.objects.filter(examples__conversation_id=conversation_id, status=DatasetExport.Status.READY)
        .values_list("pk", flat=True)
        .distinct()
    )


def dataset_export_file(*, course_id: int, export_id: int, part: str) -> Path:
    """One file of a course's ready export: `train`, `eval` or `report`; else NotFound."""
    export = DatasetExport.objects.filter(pk=export_id, course_id=course_id, status=DatasetExport.Status.READY).first()
    if export is None:
        raise NotFound("No such dataset (it may have been purged after an erasure).")
    train = Path(export.train_path)
    held_out, report = sibling_paths(train)
    path = {"train": train, "eval": held_out, "report": report}.get(part)
    if path is None or not path.exists():
        raise NotFound("That file of the dataset does not exist.")
    return path


@dataclass(frozen=True)
class TrainingOverview:
    """The training page's data: recent jobs (newest first), the latest one's loss curve, the
    course's adapter versions (each with whether its dataset was since purged), what serves the
    course now and what a rollback would make serve (None: the base model)."""

    jobs: list[TrainingJob]
    latest: TrainingJob | None
    active: bool
    loss_points: list[tuple[int, float | None, float | None]]
    adapters: list[tuple[AdapterVersion, bool]]
    serving: AdapterVersion | None
    rollback_to: AdapterVersion | None


def training_overview(*, course_id: int) -> TrainingOverview:
    jobs = list(TrainingJob.objects.filter(course_id=course_id).order_by("-id")[:RECENT_JOBS])
    latest = jobs[0] if jobs else None
    # A trained model is not anonymous data: one trained on a purged dataset must be retrained.
    erased = set(
        TrainingJob.objects.filter(
            course_id=course_id, adapter__isnull=False, dataset__status=DatasetExport.Status.PURGED
        ).values_list("adapter_id", flat=True)
    )
    adapters = list(AdapterVersion.objects.filter(course_id=course_id))
    return TrainingOverview(
        jobs=jobs,
        latest=latest,
        active=latest is not None and latest.state in TrainingJob.ACTIVE_STATES,
        loss_points=list(latest.metrics.values_list("step", "train_loss", "eval_loss")) if latest else [],
        adapters=[(adapter, adapter.pk in erased) for adapter in adapters],
        serving=next((a for a in adapters if a.status == AdapterVersion.Status.ACTIVE), None),
        rollback_to=adapter_rollback_target(course_id=course_id),
    )


def course_resolve(*, course_ref: str) -> Course:
    """Our course id, or the LMS's context id (a number is tried as our id first)."""
    course = None
    if course_ref.isdigit():
        course = Course.objects.filter(pk=int(course_ref)).first()
    if course is None:
        matches = list(Course.objects.filter(lms_context_id=course_ref)[:2])
        if len(matches) > 1:
            raise DomainError(
                f"Several LMSs have a course with context id {course_ref!r}; use our course id.",
                code="ambiguous_course",
            )
        course = matches[0] if matches else None
    if course is None:
        raise NotFound(f"No course with id or LMS context id {course_ref!r}.")
    return course


def course_admin_names(*, course_id: int) -> tuple[int, list[str]]:
    """How many administrators of the course have opened the tutor, and their names as the LMS
    gave them (for the course's teachers: who to ask about training; none when REVIEW_SHOW_NAMES
    is off)."""
    admins = Membership.objects.filter(course_id=course_id, role=Role.ADMIN)
    if not settings.REVIEW_SHOW_NAMES:
        return admins.count(), []
    names = [str(name) for name in MemberName.objects.filter(membership__in=admins).order_by("membership_id")]
    return admins.count(), [name for name in names if name]
