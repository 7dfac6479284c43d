"""Rotate the tool's signing key.

    python manage.py rotate_keys [--retire-after-days N]

A new key signs from now on; superseded keys stay in the JWKS for
LTI_KEY_RETIRE_AFTER_DAYS (7) after they were superseded, so platforms that
cached the old key set keep verifying. Replaces django-lti's command of the
same name, which deactivates old keys at once.
"""

from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandParser

from lti.services import keys_rotate


class Command(BaseCommand):
    help = "Create a new signing key; retire keys superseded longer than the grace period."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--retire-after-days", type=float, default=None)

    def handle(self, *args, **options) -> None:
        days = options["retire_after_days"]
        rotated = keys_rotate(retire_after=timedelta(days=days) if days is not None else None)
        self.stdout.write(f"New signing key {rotated.new_key}. Retired {rotated.retired} superseded key(s).")
