from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TutorConfig(AppConfig):
    name = "tutor"
    verbose_name = "Tutor"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tutor import schema  # noqa: F401  (registers the OpenAPI authentication extensions)
        from tutor.logs import request_logs_redact

        request_logs_redact()
        post_migrate.connect(cache_table_create, sender=self)


def cache_table_create(sender: AppConfig, *, using: str, verbosity: int = 1, **kwargs) -> None:
    """Without REDIS_URL the cache (OIDC state, nonces, key sets) is a database table: `migrate`
    makes it, so that a freshly migrated database can take a launch (a no-op for other caches)."""
    from django.core.management import call_command

    call_command("createcachetable", database=using, verbosity=max(verbosity - 1, 0))
