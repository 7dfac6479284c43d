"""The adapter registry: every LoRA adapter version of every course, and which one serves it."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class AdapterVersion(models.Model):
    """One trained adapter. vLLM serves it under `name` (course-C-vN): a new version is always a
    new name, never an in-place reload (whose stale prefix-cache entries are a known vLLM bug).

    Which students' data is in it: the training job that made it names its dataset export, whose
    lines name their conversations (training.TrainingJob.adapter → dataset → examples).
    """

    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate (trained, not serving)"
        ACTIVE = "active", "Active (serving the course)"
        PREVIOUS = "previous", "Previous (kept loaded for rollback)"
        RETIRED = "retired", "Retired (unloaded)"
        REJECTED = "rejected", "Rejected"

    course = models.ForeignKey("tutor.Course", related_name="adapters", on_delete=models.CASCADE)
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=100, unique=True)
    base_model = models.CharField(max_length=500)
    path = models.CharField(max_length=1000)
    sha256 = models.CharField(max_length=64)
    metrics = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["course_id", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["course", "version"], name="adapter_version_unique"),
            models.UniqueConstraint(
                fields=["course"], condition=Q(status="active"), name="adapter_one_active_per_course"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"
