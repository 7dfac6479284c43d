"""Training data and jobs: each export of a course's approved exchanges and where every line came
from; each retraining job, its states and the moves between them, its events and loss curve."""

from __future__ import annotations

from pathlib import Path

from django.db import models


def sibling_paths(out: Path) -> tuple[Path, Path]:
    """The held-out file and the report written beside an export's training file."""
    stem = out.name.removesuffix(".jsonl")
    return out.with_name(stem + ".eval.jsonl"), out.with_name(stem + ".report.json")


class DatasetExport(models.Model):
    """One export: the JSONL files on disk, the validation report, and its lines' provenance.

    An export is `purged` (its files deleted) as soon as any conversation in it is erased or
    expires: a dataset never outlives the data it was made from.
    """

    class Status(models.TextChoices):
        READY = "ready", "Ready"
        PURGED = "purged", "Purged (a student's data in it was erased)"

    course = models.ForeignKey("tutor.Course", related_name="dataset_exports", on_delete=models.CASCADE)
    requested_by = models.ForeignKey("tutor.Person", null=True, blank=True, related_name="+", on_delete=models.SET_NULL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    train_path = models.CharField(max_length=1000)
    eval_path = models.CharField(max_length=1000, blank=True)
    eval_fraction = models.FloatField()
    base_model = models.CharField(max_length=500)
    max_tokens = models.PositiveIntegerField()
    train_examples = models.PositiveIntegerField(default=0)
    eval_examples = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    purged_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Dataset {self.pk} of {self.course} ({self.status})"


class DatasetExample(models.Model):
    """One line of an export, with its conversation (deleted with it) and, per assistant turn,
    whether the text is the tutor's original reply or a teacher's correction."""

    class Split(models.TextChoices):
        TRAIN = "train", "Training"
        EVAL = "eval", "Held out"

    export = models.ForeignKey(DatasetExport, related_name="examples", on_delete=models.CASCADE)
    conversation = models.ForeignKey("tutor.Conversation", related_name="+", on_delete=models.CASCADE)
    split = models.CharField(max_length=8, choices=Split.choices)
    line = models.PositiveIntegerField()
    content_sha256 = models.CharField(max_length=64)
    tokens = models.PositiveIntegerField()
    # [{"message_id": 12, "source": "teacher_corrected" | "original" | "context"}, ...] per assistant turn
    provenance = models.JSONField(default=list)

    class Meta:
        ordering = ["export_id", "split", "line"]
        constraints = [models.UniqueConstraint(fields=["export", "split", "line"], name="dataset_example_unique_line")]

    def __str__(self) -> str:
        return f"{self.split} line {self.line} of dataset {self.export_id}"


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    VALIDATING = "validating", "Validating the dataset"
    TRAINING = "training", "Training"
    EVALUATING = "evaluating", "Evaluating"
    READY = "ready", "Ready (waiting for an admin's decision)"
    PROMOTED = "promoted", "Promoted (serving)"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


# A job holds its course's training slot while in one of these (one such job per course).
JOB_ACTIVE_STATES = (JobState.QUEUED, JobState.VALIDATING, JobState.TRAINING, JobState.EVALUATING)

# Every move a job may make, listed once; training.jobs.job_transition makes all of them and refuses
# any other. A worker claims a queued job, or takes over an active one whose worker died (back to
# validating: it resumes from its last checkpoint); an active job may fail or be cancelled at any
# step; a job the gate did not promote waits in `ready` for an administrator. The rest are final.
JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    JobState.QUEUED: frozenset({JobState.VALIDATING, JobState.CANCELLED}),
    JobState.VALIDATING: frozenset(
        # promoted: its adapter was promoted before the worker that took it died
        {JobState.VALIDATING, JobState.TRAINING, JobState.PROMOTED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.TRAINING: frozenset({JobState.VALIDATING, JobState.EVALUATING, JobState.FAILED, JobState.CANCELLED}),
    JobState.EVALUATING: frozenset(
        {JobState.VALIDATING, JobState.READY, JobState.PROMOTED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.READY: frozenset({JobState.PROMOTED, JobState.REJECTED}),
    JobState.PROMOTED: frozenset(),
    JobState.REJECTED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class TrainingJob(models.Model):
    """One retraining of a course's adapter. Its row is the truth: the Celery task only acts
    through guarded state changes on it (JOB_TRANSITIONS), so a redelivered message resumes or
    does nothing. The database holds at most one active job per course."""

    State = JobState
    ACTIVE_STATES = JOB_ACTIVE_STATES
    TRANSITIONS = JOB_TRANSITIONS

    course = models.ForeignKey("tutor.Course", related_name="training_jobs", on_delete=models.CASCADE)
    dataset = models.ForeignKey(DatasetExport, null=True, blank=True, related_name="jobs", on_delete=models.SET_NULL)
    adapter = models.ForeignKey(
        "serving.AdapterVersion", null=True, blank=True, related_name="jobs", on_delete=models.SET_NULL
    )
    requested_by = models.ForeignKey("tutor.Person", null=True, blank=True, related_name="+", on_delete=models.SET_NULL)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    overrides = models.JSONField(default=dict, blank=True, help_text="TrainConfig fields set for this job")
    work_dir = models.CharField(max_length=1000, blank=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    learning_rate = models.FloatField(null=True, blank=True)
    train_loss = models.FloatField(null=True, blank=True)
    eval_loss = models.FloatField(null=True, blank=True)
    eta_seconds = models.PositiveIntegerField(null=True, blank=True)
    phase = models.CharField(max_length=100, blank=True, help_text="What the job is doing now, in words")
    estimate_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="Estimated when it started")
    peak_memory_bytes = models.BigIntegerField(null=True, blank=True, help_text="The training process's peak")
    log_tail = models.TextField(blank=True)
    evaluation = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    lease_until = models.DateTimeField(null=True, blank=True, help_text="Held by a worker until then")
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # Two starts racing both pass training_job_start's check; the second insert fails here.
            models.UniqueConstraint(
                fields=["course"],
                condition=models.Q(state__in=JOB_ACTIVE_STATES),
                name="training_one_active_job_per_course",
            )
        ]

    def __str__(self) -> str:
        return f"Training job {self.pk} of {self.course} ({self.state})"


class JobEvent(models.Model):
    job = models.ForeignKey(TrainingJob, related_name="events", on_delete=models.CASCADE)
    state = models.CharField(max_length=16)
    message = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"job {self.job_id}: {self.state}"


class JobMetric(models.Model):
    """A logged training step: the loss curve of the admin page."""

    job = models.ForeignKey(TrainingJob, related_name="metrics", on_delete=models.CASCADE)
    step = models.PositiveIntegerField()
    train_loss = models.FloatField(null=True, blank=True)
    eval_loss = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step", "id"]

    def __str__(self) -> str:
        return f"job {self.job_id} step {self.step}"


class ThroughputProfile(models.Model):
    """What training measured on a machine, per base model and device: the time estimates of
    later exports and jobs use it instead of a guess."""

    base_model = models.CharField(max_length=500)
    device = models.CharField(max_length=200)
    tokens_per_second = models.FloatField(help_text="Training, evaluations excluded")
    eval_tokens_per_second = models.FloatField(null=True, blank=True)
    setup_seconds = models.FloatField(default=0, help_text="Loading and packing, before the first step")
    evaluation_seconds = models.FloatField(default=0, help_text="The gate's evaluation after training")
    jobs = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["base_model", "device"], name="throughput_per_model_device")]

    def __str__(self) -> str:
        return f"{self.tokens_per_second:.0f} tokens/s for {self.base_model} on {self.device}"
