from django.conf import settings
from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path

from tutor.api import MeApi


def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("lti/", include("lti.urls")),
    path("api/v1/me/", MeApi.as_view(), name="api-me"),
]

if settings.DEVLMS_ENABLED:
    urlpatterns.append(path("devlms/", include("devlms.urls")))
