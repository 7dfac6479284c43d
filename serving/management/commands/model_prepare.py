"""Prepare the embedded demo model (SmolLM2-135M-Instruct) as a safetensors folder.

    python manage.py model_prepare

Idempotent. Prints the folder. Not needed when MODEL_PATH names your own model.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from serving.demo_model import demo_model_prepare


class Command(BaseCommand):
    help = "Convert the embedded SmolLM2 GGUF into a model folder vLLM can serve (once)."

    def handle(self, *args, **options) -> None:
        try:
            path = demo_model_prepare(target=settings.MODEL_DEMO_DIR, log=lambda line: self.stderr.write(line))
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(str(path))
