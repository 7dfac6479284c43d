"""python manage.py export_dataset --course ID --out FILE.jsonl [--eval-fraction 0.1] [--seed 0]

Writes FILE.jsonl (training), FILE.eval.jsonl (held out) and FILE.report.json, and prints
the validation report. --course takes our course id or the LMS's context id.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from training.datasets import dataset_export, report_lines
from training.selectors import course_resolve
from tutor.errors import DomainError


class Command(BaseCommand):
    help = "Export a course's approved, consented exchanges as a chat-format JSONL training dataset."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--course", required=True, help="Our course id or the LMS's context id.")
        parser.add_argument("--out", type=Path, help="Output .jsonl (default: TRAINING_DATA_DIR/course-ID/…).")
        parser.add_argument("--eval-fraction", type=float, default=None, help="Held-out share of conversations.")
        parser.add_argument("--seed", type=int, default=0, help="Seed of the train/held-out split.")

    def handle(self, *args, **options) -> None:
        try:
            course = course_resolve(course_ref=options["course"])
            export = dataset_export(
                course=course,
                out=options["out"],
                eval_fraction=options["eval_fraction"],
                seed=options["seed"],
                progress=lambda line: self.stderr.write(line),
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        for line in report_lines(export.report):
            self.stdout.write(line)
        self.stdout.write(self.style.SUCCESS(f"dataset {export.id}: {export.train_path}"))
