"""The tutor app's routes: the student and review APIs (/api/v1/) and the review pages (/review/)."""

from django.urls import path

from tutor import api, review_views, triage_views

urlpatterns = [
    path("api/v1/me/", api.MeApi.as_view(), name="api-me"),
    path("api/v1/conversations/", api.ConversationListApi.as_view(), name="api-conversations"),
    path(
        "api/v1/conversations/messages/stream/",
        api.ConversationStartStreamApi.as_view(),
        name="api-conversation-start-stream",
    ),
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
    path(
        "api/v1/course/tutor-settings/preview/",
        api.TutorSettingsPreviewApi.as_view(),
        name="api-tutor-settings-preview",
    ),
    path("api/v1/course/tutor-settings/try/", api.TutorSettingsTryApi.as_view(), name="api-tutor-settings-try"),
    path("api/v1/course/placements/<int:placement_id>/", api.PlacementApi.as_view(), name="api-placement"),
    path("api/v1/me/training/", api.TrainingChoiceApi.as_view(), name="api-training-choice"),
    path("api/v1/course/training-consent/", api.TrainingConsentApi.as_view(), name="api-training-consent"),
    path("api/v1/course/safety-alerts/", api.SafetyAlertsApi.as_view(), name="api-safety-alerts"),
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
    path("review/<int:course_id>/bulk/", review_views.review_bulk, name="review-bulk"),
    path("review/<int:course_id>/export.csv", review_views.review_export_csv, name="review-export-csv"),
    path("review/<int:course_id>/flags/", triage_views.review_flags, name="review-flags"),
    path("review/<int:course_id>/flags/<int:flag_id>/", triage_views.review_flag_action, name="review-flag-action"),
    path("review/<int:course_id>/flags/addresses/", triage_views.review_flag_addresses, name="review-flag-addresses"),
    path(
        "review/<int:course_id>/training-consent/",
        review_views.review_training_consent,
        name="review-training-consent",
    ),
]
