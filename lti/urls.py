from django.urls import path

from lti import views

app_name = "lti"

urlpatterns = [
    path("login/", views.login, name="login"),
    path("launch/", views.launch, name="launch"),
    path("launch/confirm/", views.launch_confirm, name="launch-confirm"),
    path("deep-link/", views.deep_link_respond, name="deep-link"),
    path("data-privacy/erase/", views.data_privacy_erase, name="data-privacy-erase"),
    path("jwks/", views.jwks, name="jwks"),
    path("register/", views.register, name="register"),
    path("canvas.json", views.canvas_config, name="canvas-config"),
    path("config.json", views.tool_configuration, name="config"),
]
