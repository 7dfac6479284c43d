"""The Django project: settings, root URLs, ASGI/WSGI entry points and the Celery app.

Nothing here holds domain logic; each app (lti, tutor, training, serving, devlms) owns its own
URLs, services and selectors. See docs/architecture.md.
"""

from config.celery import app as celery_app

__all__ = ["celery_app"]
