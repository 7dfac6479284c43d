"""python manage.py adapters list|promote|rollback|reload [--course ID] [--adapter-version N]

`rollback` takes the active adapter out of service: the previous version serves the course again,
or the base model when the active one is the course's first. It prints what serves the course now.
`reload` writes every active and previous version the adapter store lacks into it and warms them on
every replica (VLLM_REPLICA_URLS) that does not hold them yet.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from serving.adapters import adapter_promote, adapter_rollback, adapters_publish
from serving.client import AdapterError
from serving.selectors import adapter_to_promote, adapter_versions


class Command(BaseCommand):
    help = (
        "List, promote or roll back a course's LoRA adapter versions (rolling back a course's first "
        "adapter serves it with the base model again); reload them into vLLM."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["list", "promote", "rollback", "reload"])
        parser.add_argument("--course", type=int, help="Our course id.")
        parser.add_argument(
            "--adapter-version", type=int, help="promote: the version number (default: the newest candidate)."
        )

    def handle(self, *args, action: str, course: int | None, **options) -> None:
        version = options["adapter_version"]
        try:
            if action == "reload":
                loaded = adapters_publish()
                self.stdout.write(f"loaded: {', '.join(loaded) or 'nothing (all were loaded)'}")
                return
            if course is None:
                raise CommandError("--course is required.")
            if action == "list":
                versions = adapter_versions(course_id=course)
                for adapter in versions:
                    losses = {k: v for k, v in adapter.metrics.items() if k.endswith("_loss")}
                    self.stdout.write(f"v{adapter.version}  {adapter.status:9}  {adapter.name}  {losses}")
                if not versions:
                    self.stdout.write("No adapter versions for this course.")
                return
            if action == "promote":
                adapter = adapter_to_promote(course_id=course, version=version)
                if adapter is None:
                    raise CommandError("No such adapter version to promote.")
                adapter = adapter_promote(adapter=adapter)
            else:
                adapter = adapter_rollback(course_id=course)
        except AdapterError as exc:
            raise CommandError(str(exc)) from exc
        serving = adapter.name if adapter else "the base model"
        self.stdout.write(self.style.SUCCESS(f"course {course} is now served by {serving}"))
