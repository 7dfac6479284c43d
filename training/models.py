"""Training datasets: each export of a course's approved exchanges, and where every line came from."""

from __future__ import annotations

from django.db import models


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
