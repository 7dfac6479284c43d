"""A database error during a training task strands no job (issue 10, item 12's second half).

The task's first query meets a database that refuses it (here a table lock the worker may wait
for only 300 ms, PostgreSQL's `lock_timeout`: an OperationalError, as SQLite's "database is
locked" is); Celery retries it with backoff, and once the database answers the job goes on to
its end instead of staying `queued`.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import quote

import pytest
from django.db import connections, transaction

from tests.support.db import database_url_for_tests
from tests.support.servers import celery_worker
from training.models import TrainingJob
from training.tasks import train_adapter
from tutor.models import Course

# It starts a Celery worker in its body (no model server): the tier is declared.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.real_model]


def test_a_task_that_meets_a_locked_database_retries_and_the_job_is_not_left_queued(settings):
    course = Course.objects.create(
        lms_issuer="https://lms.example", lms_deployment_id="1", lms_context_id="db-errors", title="Locks"
    )
    job = TrainingJob.objects.create(course=course)  # no dataset: the attempt fails fast once claimed
    lock_held, release = threading.Event(), threading.Event()

    def hold_the_job_table() -> None:
        try:
            with transaction.atomic(), connections["default"].cursor() as cursor:
                cursor.execute(f"LOCK TABLE {TrainingJob._meta.db_table} IN ACCESS EXCLUSIVE MODE")
                lock_held.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_job_table)
    holder.start()
    assert lock_held.wait(10)
    worker_db = database_url_for_tests() + "?options=" + quote("-c lock_timeout=300")
    try:
        with celery_worker(
            database_url=worker_db,
            broker_url=settings.CELERY_BROKER_URL,
            queues="gpu",
        ) as (log, _):
            train_adapter.delay(job.pk)
            deadline = time.monotonic() + 120
            while "Retry in" not in log.read_text():
                assert time.monotonic() < deadline, "the task never retried:\n" + log.read_text()[-3000:]
                time.sleep(0.2)
            job.refresh_from_db()
            assert job.state == TrainingJob.State.QUEUED  # nothing could be written while it was locked
            release.set()
            holder.join(10)
            deadline = time.monotonic() + 120
            while job.state == TrainingJob.State.QUEUED or job.state in TrainingJob.ACTIVE_STATES:
                assert time.monotonic() < deadline, f"the job stayed {job.state}:\n" + log.read_text()[-3000:]
                time.sleep(0.5)
                job.refresh_from_db()
            log_text = log.read_text()
    finally:
        release.set()
        holder.join(10)
    job.refresh_from_db()
    assert job.state == TrainingJob.State.FAILED, job.state
    assert "dataset is gone" in job.error
    assert "lock timeout" in log_text.lower() or "locknotavailable" in log_text.lower(), log_text[-3000:]
