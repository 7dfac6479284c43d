from django.conf import settings
from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from tutor import api


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
]

if settings.DEVLMS_ENABLED:
    urlpatterns.append(path("devlms/", include("devlms.urls")))
