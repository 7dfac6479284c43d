from django.urls import path

from devlms import views

app_name = "devlms"

urlpatterns = [
    path("", views.home, name="home"),
    path("start/", views.start, name="start"),
    path("auth/", views.auth, name="auth"),
    path("jwks/", views.jwks, name="jwks"),
    path("deep-link-return/", views.deep_link_return, name="deep-link-return"),
    path("outbox/", views.outbox_page, name="outbox"),
]
