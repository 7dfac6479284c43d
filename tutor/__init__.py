"""The tutoring app: courses, conversations, privacy and teacher review.

It is also the Django project package (settings, root URLs, ASGI/WSGI, the Celery app).
"""

from tutor.celery import app as celery_app

__all__ = ["celery_app"]
