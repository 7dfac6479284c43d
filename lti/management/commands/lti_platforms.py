"""List registered platforms, or activate one that arrived by dynamic registration.

python manage.py lti_platforms [--activate ID]
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from lti_tool.models import LtiRegistration

from lti.services import platform_activate


class Command(BaseCommand):
    help = "List LTI platform registrations; --activate ID trusts a pending one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--activate", type=int, metavar="ID")

    def handle(self, *args, **options) -> None:
        if options["activate"] is not None:
            try:
                registration = platform_activate(registration_id=options["activate"])
            except LtiRegistration.DoesNotExist:
                raise CommandError(f"No registration with id {options['activate']}.") from None
            self.stdout.write(f"Activated registration {registration.id} ({registration.name}).")
            return
        for registration in LtiRegistration.objects.order_by("id"):
            state = "active" if registration.is_active else "PENDING"
            deployments = ", ".join(registration.deployments.values_list("deployment_id", flat=True))
            self.stdout.write(
                f"{registration.id}\t{state}\t{registration.name}\t{registration.issuer}\t"
                f"client_id={registration.client_id}\tdeployments={deployments}"
            )
