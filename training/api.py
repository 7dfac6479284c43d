"""The training app's API: dataset exports (retraining calls come with the jobs)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from training.datasets import dataset_export
from tutor.access import IsCourseAdmin
from tutor.parsers import StrictInputSerializer


class ExportIn(StrictInputSerializer):
    eval_fraction = serializers.FloatField(required=False, min_value=0, max_value=0.9)


class ExportOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    train_examples = serializers.IntegerField()
    eval_examples = serializers.IntegerField()
    report = serializers.DictField()


class DatasetExportApi(APIView):
    """Admins: export the launched course's training dataset (see docs/training-data.md)."""

    permission_classes = [IsCourseAdmin]
    error_statuses = (409,)  # training_not_consented, and the like (documented in the schema)

    @extend_schema(request=ExportIn, responses={201: ExportOut})
    def post(self, request: Request) -> Response:
        reviewer = request.reviewer
        data = ExportIn(data=request.data)
        data.is_valid(raise_exception=True)
        export = dataset_export(
            course=reviewer.course,
            requested_by=reviewer.person,
            eval_fraction=data.validated_data.get("eval_fraction"),
        )
        return Response(
            {
                "id": export.id,
                "status": export.status,
                "train_examples": export.train_examples,
                "eval_examples": export.eval_examples,
                "report": export.report,
            },
            status=status.HTTP_201_CREATED,
        )


class TrainingJobIn(StrictInputSerializer):
    """Settings for this job only (the deployment's defaults otherwise; docs/retraining.md)."""

    max_steps = serializers.IntegerField(required=False, min_value=1)
    epochs = serializers.FloatField(required=False, min_value=0.1, max_value=50)
    tokens_per_step = serializers.IntegerField(required=False, min_value=64, max_value=1_000_000)
    learning_rate = serializers.FloatField(required=False, min_value=1e-7, max_value=1e-1)
    rank = serializers.IntegerField(required=False, min_value=1, max_value=256)


class TrainingJobOut(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    step = serializers.IntegerField()
    total_steps = serializers.IntegerField()
    train_loss = serializers.FloatField(allow_null=True)
    eval_loss = serializers.FloatField(allow_null=True)
    eta_seconds = serializers.IntegerField(allow_null=True)
    phase = serializers.CharField()
    estimate_seconds = serializers.IntegerField(allow_null=True)
    peak_memory_bytes = serializers.IntegerField(allow_null=True)
    evaluation = serializers.DictField()
    error = serializers.CharField()
    adapter = serializers.CharField(allow_null=True)


def job_payload(job) -> dict:
    return {
        "id": job.id,
        "state": job.state,
        "step": job.step,
        "total_steps": job.total_steps,
        "train_loss": job.train_loss,
        "eval_loss": job.eval_loss,
        "eta_seconds": job.eta_seconds,
        "phase": job.phase,
        "estimate_seconds": job.estimate_seconds,
        "peak_memory_bytes": job.peak_memory_bytes,
        "evaluation": {k: v for k, v in job.evaluation.items() if k != "samples"},
        "error": job.error,
        "adapter": job.adapter.name if job.adapter_id else None,
    }


class TrainingJobListApi(APIView):
    """Admins: retrain the launched course's adapter (a job on the `gpu` queue)."""

    permission_classes = [IsCourseAdmin]
    error_statuses = (409,)  # training_not_consented, and the like (documented in the schema)

    @extend_schema(request=TrainingJobIn, responses={201: TrainingJobOut})
    def post(self, request: Request) -> Response:
        from training.jobs import training_job_start

        reviewer = request.reviewer
        data = TrainingJobIn(data=request.data)
        data.is_valid(raise_exception=True)
        job = training_job_start(course=reviewer.course, requested_by=reviewer.person, overrides=data.validated_data)
        return Response(job_payload(job), status=status.HTTP_201_CREATED)


class TrainingJobDetailApi(APIView):
    """Admins: a job's progress (poll it); DELETE cancels it."""

    permission_classes = [IsCourseAdmin]

    def _job(self, request: Request, job_id: int):
        from training.models import TrainingJob
        from tutor.errors import NotFound

        reviewer = request.reviewer
        job = TrainingJob.objects.select_related("adapter").filter(pk=job_id, course_id=reviewer.course_id).first()
        if job is None:
            raise NotFound("No such training job in this course.")
        return job

    @extend_schema(responses=TrainingJobOut)
    def get(self, request: Request, job_id: int) -> Response:
        return Response(job_payload(self._job(request, job_id)))

    @extend_schema(responses=TrainingJobOut)
    def delete(self, request: Request, job_id: int) -> Response:
        from training.jobs import job_cancel

        job = job_cancel(job_id=self._job(request, job_id).pk)
        return Response(job_payload(job))
