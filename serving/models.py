"""The adapter registry: every LoRA adapter version of every course, and which one serves it."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from django.db import models
from django.db.models import Q

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def files_checksum(files: Mapping[str, bytes]) -> str:
    """An adapter's files (ADAPTER_FILES, by name), hashed: the same digest whether they are read
    from a folder or are about to be written to one."""
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        digest.update(name.encode())
        digest.update(files[name])
    return digest.hexdigest()


def adapter_checksum(path: Path) -> str:
    """The adapter folder's files, hashed: recorded at registration, checked before every load."""
    return files_checksum({name: (Path(path) / name).read_bytes() for name in ADAPTER_FILES})


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

    # What vLLM must have loaded: the versions serving a course and those kept for an instant rollback.
    KEPT_LOADED = (Status.ACTIVE, Status.PREVIOUS)

    course = models.ForeignKey("tutor.Course", related_name="adapters", on_delete=models.CASCADE)
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=100, unique=True)
    base_model = models.CharField(max_length=500)
    path = models.CharField(max_length=1000)
    sha256 = models.CharField(max_length=64)
    # The adapter store's copy (serving.store: its config names the served base model, so it is
    # not the registered folder byte for byte): its checksum once written, checked before use.
    stored_sha256 = models.CharField(max_length=64, blank=True, default="")
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

    def files_intact(self) -> bool:
        """The folder still holds the files registered (a changed adapter is never loaded)."""
        return adapter_checksum(Path(self.path)) == self.sha256
