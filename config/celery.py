"""The Celery application. Workers:

    celery -A config worker -Q default -c 2            # light tasks (retention, schedules)
    celery -A config worker -Q gpu -c 1 --prefetch-multiplier 1   # training, one job per GPU
    celery -A config beat                              # the periodic schedule

The broker comes from settings (CELERY_BROKER_URL, else REDIS_URL, else Kombu's filesystem
transport for the demo); see docs/configuration.md.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("tutor")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _worker_metrics(**kwargs) -> None:
    """The worker's own metrics port (WORKER_METRICS_PORT), once Django is set up."""
    from django.conf import settings

    if settings.WORKER_METRICS_PORT:
        from config.metrics import worker_metrics_serve

        worker_metrics_serve()


@app.on_after_configure.connect
def _filesystem_broker_folders(sender: Celery, **kwargs) -> None:
    """Kombu's filesystem transport needs its folders to exist."""
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if options.get(key):
            os.makedirs(options[key], exist_ok=True)
    backend = str(sender.conf.result_backend or "")
    if backend.startswith("file://"):
        os.makedirs(backend.removeprefix("file://"), exist_ok=True)
