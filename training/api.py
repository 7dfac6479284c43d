"""The training app's API: dataset exports and retraining jobs, for the launched course's
administrators (tutor.access.IsCourseAdmin). Each view parses its input, calls one service or
selector, and renders the result with the output serializer its schema declares."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from training.datasets import dataset_export
from training.jobs import job_cancel, training_job_start
from training.selectors import training_job_get, training_overview
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
        return Response(ExportOut(export).data, status=status.HTTP_201_CREATED)


class TrainingJobIn(StrictInputSerializer):
    """Settings for this job only (the deployment's defaults otherwise; docs/retraining.md)."""

    max_steps = serializers.IntegerField(required=False, min_value=1)
    epochs = serializers.FloatField(required=False, min_value=0.1, max_value=50)
    tokens_per_step = serializers.IntegerField(required=False, min_value=64, max_value=1_000_000)
    learning_rate = serializers.FloatField(required=False, min_value=1e-7, max_value=1e-1)
    rank = serializers.IntegerField(required=False, min_value=1, max_value=256)


class JobEvaluationField(serializers.DictField):
    """The gate's evaluation without its sample replies (the training page shows those)."""

    def to_representation(self, value: dict) -> dict:
        return super().to_representation({key: item for key, item in value.items() if key != "samples"})


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
    evaluation = JobEvaluationField()
    error = serializers.CharField()
    adapter = serializers.CharField(source="adapter.name", allow_null=True)  # its served name; None: none yet


class TrainingJobListApi(APIView):
    """Admins: retrain the launched course's adapter (a job on the `gpu` queue)."""

    permission_classes = [IsCourseAdmin]
    error_statuses = (409,)  # training_not_consented, and the like (documented in the schema)

    @extend_schema(request=TrainingJobIn, responses={201: TrainingJobOut})
    def post(self, request: Request) -> Response:
        reviewer = request.reviewer
        data = TrainingJobIn(data=request.data)
        data.is_valid(raise_exception=True)
        job = training_job_start(course=reviewer.course, requested_by=reviewer.person, overrides=data.validated_data)
        return Response(TrainingJobOut(job).data, status=status.HTTP_201_CREATED)


class TrainingJobDetailApi(APIView):
    """Admins: a job's progress (poll it); DELETE cancels it."""

    permission_classes = [IsCourseAdmin]

    @extend_schema(responses=TrainingJobOut)
    def get(self, request: Request, job_id: int) -> Response:
        job = training_job_get(course_id=request.reviewer.course_id, job_id=job_id)
        return Response(TrainingJobOut(job).data)

    @extend_schema(responses=TrainingJobOut)
    def delete(self, request: Request, job_id: int) -> Response:
        job = job_cancel(course_id=request.reviewer.course_id, job_id=job_id)
        return Response(TrainingJobOut(job).data)


class TrainingStatusOut(serializers.Serializer):
    """What the administrator's landing page shows: what serves the course, its latest job."""

    serving = serializers.CharField(source="serving.name", allow_null=True)  # None: the base model
    active = serializers.BooleanField()
    latest = TrainingJobOut(allow_null=True)


class TrainingStatusApi(APIView):
    """Admins: the launched course's training at a glance (poll it while a job runs)."""

    permission_classes = [IsCourseAdmin]

    @extend_schema(responses=TrainingStatusOut)
    def get(self, request: Request) -> Response:
        return Response(TrainingStatusOut(training_overview(course_id=request.reviewer.course_id)).data)
