"""python manage.py train_adapter --course ID [--wait] [--max_steps N] [--lora_alpha N] [--FIELD VALUE ...]

Exports the course's dataset and queues a training job on the `gpu` Celery queue; with
--wait, shows its progress until it ends. --course takes our id or the LMS context id. Any
TrainConfig field but the paths is a flag, as in the recipe's CLI (`--help` lists them; a boolean
takes a value: `--check_memory false`): the flags given are the job's overrides, the rest keep
the deployment's defaults.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from training.config import OVERRIDABLE, overrides_parser
from training.estimates import duration_words
from training.jobs import training_job_start
from training.models import TrainingJob
from training.selectors import course_resolve
from tutor.errors import DomainError


class Command(BaseCommand):
    help = "Retrain a course's tutor adapter (queues a job; --wait shows its progress)."

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, parents=[overrides_parser()], **kwargs)

    def add_arguments(self, parser) -> None:
        parser.add_argument("--course", required=True)
        parser.add_argument("--wait", action="store_true")

    def handle(self, *args, **options) -> None:
        overrides = {name: options[name] for name in OVERRIDABLE if options.get(name) is not None}
        try:
            job = training_job_start(course=course_resolve(course_ref=options["course"]), overrides=overrides)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"training job {job.pk} queued (dataset {job.dataset_id})")
        if job.estimate_seconds:
            estimate = duration_words(job.estimate_seconds)
            self.stdout.write(f"estimated time: {estimate} (early stopping may end it sooner)")
        if not options["wait"]:
            return
        while True:
            job.refresh_from_db()
            self.stderr.write("\r" + progress_bar(job), ending="")
            if job.state not in TrainingJob.ACTIVE_STATES:
                break
            time.sleep(1)
        self.stderr.write("")
        if job.state == TrainingJob.State.FAILED:
            raise CommandError(f"job {job.pk} failed: {job.error}")
        self.stdout.write(f"job {job.pk}: {job.get_state_display()}")


def progress_bar(job: TrainingJob, width: int = 30) -> str:
    """Steps once training runs; before that (and after) what the job is doing, in words."""
    if not job.total_steps or job.state != TrainingJob.State.TRAINING:
        left = f" (about {duration_words(job.eta_seconds)} left)" if job.eta_seconds else ""
        return f"{job.state:10} {job.phase or job.get_state_display()}{left}".ljust(78)
    done = job.step / job.total_steps
    bar = "█" * int(done * width) + "░" * (width - int(done * width))
    loss = f" loss {job.train_loss:.3f}" if job.train_loss is not None else ""
    eta = f" ETA {duration_words(job.eta_seconds)}" if job.eta_seconds else ""
    return f"{job.state:10} {bar} {job.step}/{job.total_steps}{loss}{eta}   "
