"""Root URLs: each app's own urls.py, plus health (/healthz liveness, /health/ every part),
/metrics (Prometheus), admin and the OpenAPI schema."""

from django.conf import settings
from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from config.health import health_view
from config.metrics import metrics_view


def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("health/", health_view, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("lti/", include("lti.urls")),
    path(
        "api/schema/", SpectacularAPIView.as_view(permission_classes=[], authentication_classes=[]), name="api-schema"
    ),
    path("", include("tutor.urls")),
    path("", include("training.urls")),
]

if settings.DEVLMS_ENABLED:
    urlpatterns.append(path("devlms/", include("devlms.urls")))

handler400 = "tutor.errors.bad_request"
handler403 = "tutor.errors.permission_denied"
handler404 = "tutor.errors.page_not_found"
handler500 = "tutor.errors.server_error"
