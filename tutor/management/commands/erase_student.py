"""python manage.py erase_student --issuer URL --sub ID

Removes everything about one LMS user (the same as the LMS's Data Privacy Launch): their
pseudonymous person, memberships, name, conversations, ratings, reviews of their messages and
dataset lines; exports that held their data are purged. Prints what was deleted, per table.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from tutor.services import person_erase


class Command(BaseCommand):
    help = "Erase everything the tutor holds about one LMS user."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--issuer", required=True, help="The LMS's issuer URL (iss).")
        parser.add_argument("--sub", required=True, help="The user's id in that LMS (the launch's sub).")

    def handle(self, *args, **options) -> None:
        counts = person_erase(issuer=options["issuer"], subject=options["sub"], via="command")
        if counts is None:
            self.stdout.write("Nothing is held about this user; nothing was deleted.")
            return
        for table, number in sorted(counts.items()):
            self.stdout.write(f"{table}: {number}")
        self.stdout.write(self.style.SUCCESS("Erased."))
