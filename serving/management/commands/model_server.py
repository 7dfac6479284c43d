"""Start the vLLM multi-LoRA model server: `python manage.py model_server [--print]`."""

import os
import shlex

from django.core.management.base import BaseCommand, CommandError

from serving.model_server import model_server_command


class Command(BaseCommand):
    help = "Run vLLM (OpenAI API, multi-LoRA, runtime adapter loading) on the configured base model."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--print", action="store_true", help="print the command instead of running it")

    def handle(self, *args, **options) -> None:
        try:
            command = model_server_command()
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        if options["print"]:
            self.stdout.write(shlex.join(command.argv))
            return
        os.execve(command.argv[0], command.argv, command.env)  # noqa: S606 (our own argv: become vLLM)
