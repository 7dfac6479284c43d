from django.conf import settings
from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from training import api as training_api
from training import views as training_views
from tutor import api, review_views, triage_views


def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("lti/", include("lti.urls")),
    path(
        "api/schema/", SpectacularAPIView.as_view(permission_classes=[], authentication_classes=[]), name="api-schema"
    ),
    path("api/v1/me/", api.MeApi.as_view(), name="api-me"),
    path("api/v1/conversations/", api.ConversationListApi.as_view(), name="api-conversations"),
    path("api/v1/conversations/<int:conversation_id>/", api.ConversationDetailApi.as_view(), name="api-conversation"),
    path("api/v1/conversations/<int:conversation_id>/messages/", api.MessageCreateApi.as_view(), name="api-messages"),
    path(
        "api/v1/conversations/<int:conversation_id>/messages/stream/",
        api.MessageStreamApi.as_view(),
        name="api-messages-stream",
    ),
    path("api/v1/conversations/<int:conversation_id>/reply/", api.ReplyRetryApi.as_view(), name="api-reply"),
    path(
        "api/v1/conversations/<int:conversation_id>/reply/stream/",
        api.ReplyStreamApi.as_view(),
        name="api-reply-stream",
    ),
    path("api/v1/messages/<int:message_id>/rating/", api.MessageRatingApi.as_view(), name="api-message-rating"),
    path("api/v1/course/tutor-settings/", api.TutorSettingsApi.as_view(), name="api-tutor-settings"),
    path("api/v1/me/training/", api.TrainingChoiceApi.as_view(), name="api-training-choice"),
    path("api/v1/course/training-consent/", api.TrainingConsentApi.as_view(), name="api-training-consent"),
    path("api/v1/course/safety-alerts/", api.SafetyAlertsApi.as_view(), name="api-safety-alerts"),
    path("api/v1/course/dataset-exports/", training_api.DatasetExportApi.as_view(), name="api-dataset-exports"),
    path("api/v1/course/training-jobs/", training_api.TrainingJobListApi.as_view(), name="api-training-jobs"),
    path(
        "api/v1/course/training-jobs/<int:job_id>/",
        training_api.TrainingJobDetailApi.as_view(),
        name="api-training-job",
    ),
    path("api/v1/review/conversations/", api.ReviewConversationListApi.as_view(), name="api-review-conversations"),
    path(
        "api/v1/review/conversations/<int:conversation_id>/",
        api.ReviewConversationDetailApi.as_view(),
        name="api-review-conversation",
    ),
    path("api/v1/review/replies/<int:message_id>/", api.ReviewReplyApi.as_view(), name="api-review-reply"),
    path("api/v1/review/flags/", api.ReviewFlagListApi.as_view(), name="api-review-flags"),
    path(
        "api/v1/review/flags/<int:flag_id>/actions/", api.ReviewFlagActionApi.as_view(), name="api-review-flag-action"
    ),
    path("review/enter/", review_views.review_enter, name="review-enter"),
    path("review/<int:course_id>/", review_views.review_course, name="review-course"),
    path(
        "review/<int:course_id>/conversations/<int:conversation_id>/",
        review_views.review_conversation,
        name="review-conversation",
    ),
    path("review/<int:course_id>/replies/<int:message_id>/", review_views.review_reply, name="review-reply"),
    path("review/<int:course_id>/flags/", triage_views.review_flags, name="review-flags"),
    path("review/<int:course_id>/flags/<int:flag_id>/", triage_views.review_flag_action, name="review-flag-action"),
    path("review/<int:course_id>/flags/addresses/", triage_views.review_flag_addresses, name="review-flag-addresses"),
    path(
        "review/<int:course_id>/training-consent/",
        review_views.review_training_consent,
        name="review-training-consent",
    ),
    path("review/<int:course_id>/exports/", training_views.review_export, name="review-export"),
    path("review/<int:course_id>/training/", training_views.review_training, name="review-training"),
    path(
        "review/<int:course_id>/training/action/",
        training_views.review_training_action,
        name="review-training-action",
    ),
    path(
        "review/<int:course_id>/exports/<int:export_id>/<str:part>/",
        training_views.review_export_download,
        name="review-export-download",
    ),
]

if settings.DEVLMS_ENABLED:
    urlpatterns.append(path("devlms/", include("devlms.urls")))

handler400 = "tutor.errors.bad_request"
handler403 = "tutor.errors.permission_denied"
handler404 = "tutor.errors.page_not_found"
handler500 = "tutor.errors.server_error"
