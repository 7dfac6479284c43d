from django.apps import AppConfig


class LtiConfig(AppConfig):
    name = "lti"
    verbose_name = "LTI"
    default_auto_field = "django.db.models.BigAutoField"
