from django.apps import AppConfig


class TutorConfig(AppConfig):
    name = "tutor"
    verbose_name = "Tutor"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tutor import schema  # noqa: F401  (registers the OpenAPI authentication extensions)
