"""The training app's routes: dataset exports and training jobs, as API (/api/v1/course/) and
as the review tab's pages (/review/<course>/exports/, /review/<course>/training/)."""

from django.urls import path

from training import api, views

urlpatterns = [
    path("api/v1/course/dataset-exports/", api.DatasetExportApi.as_view(), name="api-dataset-exports"),
    path("api/v1/course/training-jobs/", api.TrainingJobListApi.as_view(), name="api-training-jobs"),
    path("api/v1/course/training-jobs/<int:job_id>/", api.TrainingJobDetailApi.as_view(), name="api-training-job"),
    path("api/v1/course/training/", api.TrainingStatusApi.as_view(), name="api-training-status"),
    path("review/<int:course_id>/exports/", views.review_export, name="review-export"),
    path("review/training/enter/", views.review_training_enter, name="review-training-enter"),
    path("review/<int:course_id>/training/", views.review_training, name="review-training"),
    path("review/<int:course_id>/training/live/", views.review_training_live, name="review-training-live"),
    path("review/<int:course_id>/training/action/", views.review_training_action, name="review-training-action"),
    path(
        "review/<int:course_id>/exports/<int:export_id>/<str:part>/",
        views.review_export_download,
        name="review-export-download",
    ),
]
