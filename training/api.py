"""The training app's API: dataset exports (retraining calls come with the jobs)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from training.datasets import dataset_export
from tutor import review
from tutor.api import reviewer_for


class ExportIn(serializers.Serializer):
    eval_fraction = serializers.FloatField(required=False, min_value=0, max_value=0.9)


class ExportOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    train_examples = serializers.IntegerField()
    eval_examples = serializers.IntegerField()
    report = serializers.DictField()


class DatasetExportApi(APIView):
    """Admins: export the launched course's training dataset (see docs/training-data.md)."""

    @extend_schema(request=ExportIn, responses={201: ExportOut})
    def post(self, request: Request) -> Response:
        reviewer = reviewer_for(request)
        review.admin_check(reviewer=reviewer)
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
