"""Register an LMS (platform) with the tool, or update its registration.

    python manage.py lti_add_platform --name NAME --issuer URL --client-id ID \
        --auth-login-url URL --auth-token-url URL --keyset-url URL --deployment-id ID

Prints, as JSON on stdout, the tool-side URLs to paste into the LMS. Running it
again with the same issuer and client id updates the registration.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser

from lti.services import platform_register, tool_urls


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(value)
    return value


class Command(BaseCommand):
    help = "Register (or update) an LTI 1.3 platform and deployment; prints the tool URLs as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True)
        parser.add_argument("--issuer", required=True, help="the platform's issuer (iss)")
        parser.add_argument("--client-id", required=True, help="the client id the platform gave the tool")
        parser.add_argument("--auth-login-url", required=True, type=_url, help="the platform's OIDC auth endpoint")
        parser.add_argument("--auth-token-url", required=True, type=_url, help="the platform's OAuth2 token endpoint")
        parser.add_argument("--keyset-url", required=True, type=_url, help="the platform's JWKS URL")
        parser.add_argument("--deployment-id", required=True)

    def handle(self, *args, **options) -> None:
        if not options["issuer"].strip() or not options["client_id"].strip() or not options["deployment_id"].strip():
            raise CommandError("--issuer, --client-id and --deployment-id must not be empty.")
        registered = platform_register(
            name=options["name"],
            issuer=options["issuer"],
            client_id=options["client_id"],
            auth_login_url=options["auth_login_url"],
            auth_token_url=options["auth_token_url"],
            keyset_url=options["keyset_url"],
            deployment_id=options["deployment_id"],
        )
        output = {
            **tool_urls(),
            "registration_id": registered.registration.id,
            "created": registered.created,
            "issuer": registered.registration.issuer,
            "client_id": registered.registration.client_id,
            "deployment_id": registered.deployment.deployment_id,
        }
        self.stdout.write(json.dumps(output, indent=2))
