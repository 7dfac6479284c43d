"""Register the development LMS with the tool (idempotent): `python manage.py devlms_setup`."""

from django.core.management.base import BaseCommand

from devlms import platform
from lti.services import platform_register


class Command(BaseCommand):
    help = "Create the development LMS's key pair and register it with the tool."

    def handle(self, *args, **options) -> None:
        platform.platform_key()
        urls = platform.endpoints()
        platform_register(
            name="Development LMS",
            issuer=platform.issuer(),
            client_id=platform.CLIENT_ID,
            auth_login_url=urls["auth_login_url"],
            auth_token_url=urls["auth_token_url"],
            keyset_url=urls["keyset_url"],
            deployment_id=platform.DEPLOYMENT_ID,
        )
        self.stdout.write(f"Development LMS registered as {platform.issuer()}")
