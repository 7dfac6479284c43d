"""LTI Platform Storage (LTI Client Side postMessages), used instead of cookies.

When the platform's login request carries `lti_storage_target` (Canvas does),
the tool sets no state cookie. The login page stores the state and nonce in the
platform's frame with `lti.put_data`; on launch, a page of ours reads them back
with `lti.get_data` and posts them with a signed one-time ticket to
`/lti/launch/confirm/`. Only a page running in the browser that started the
login can read them, which binds the launch to that browser; the confirm POST
must come from our own origin.

The ticket also carries the claims of the validated launch that the product uses
(`lti.launch.USED_CLAIMS`), signed and compressed, so the server keeps nothing of
the launch between the two steps. The browser holding it is the one that posted
the id_token, which held all of them already.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.http import HttpRequest

from tutor.errors import DomainError

STATE_TTL_SECONDS = 600
TICKET_SALT = "lti.platform-storage-ticket"
TICKET_MAX_AGE_SECONDS = 300


class StorageCheckFailed(DomainError):
    code = "storage_check_failed"
    status = 403
    title = "The tutor could not be opened"


def _state_key(state: str) -> str:
    return "lti:storage-state:" + state


def storage_state_issue(*, state: str, nonce: str, target: str, platform_origin: str) -> dict:
    record = {"state": state, "nonce": nonce, "target": target, "origin": platform_origin}
    cache.set(_state_key(state), record, STATE_TTL_SECONDS)
    return record


def storage_state_get(state: str) -> dict | None:
    return cache.get(_state_key(state))


@dataclass(frozen=True)
class Redeemed:
    launch_id: str
    claims: dict


def storage_ticket_mint(*, launch_id: str, state: str, nonce: str, claims: dict) -> str:
    return signing.dumps({"l": launch_id, "s": state, "n": nonce, "c": claims}, salt=TICKET_SALT, compress=True)


def storage_ticket_redeem(request: HttpRequest, *, ticket: str, state_value: str, nonce_value: str) -> Redeemed:
    """Checks the values read back from platform storage; returns the launch. One use only."""
    public = urlsplit(settings.PUBLIC_BASE_URL)
    if request.headers.get("Origin") != f"{public.scheme}://{public.netloc}":
        raise StorageCheckFailed("The launch confirmation did not come from the tutor's own page.")
    try:
        payload = signing.loads(ticket, salt=TICKET_SALT, max_age=TICKET_MAX_AGE_SECONDS)
    except signing.BadSignature as exc:
        raise StorageCheckFailed(
            "The launch confirmation is not valid or has expired. Open the tutor again from your course."
        ) from exc
    if not (hmac.compare_digest(state_value, payload["s"]) and hmac.compare_digest(nonce_value, payload["n"])):
        raise StorageCheckFailed(
            "Your LMS's storage does not hold this launch's state: it was not started in this browser. "
            "Open the tutor again from your course."
        )
    if not cache.add("lti:storage-ticket-used:" + payload["s"], 1, TICKET_MAX_AGE_SECONDS * 2):
        raise StorageCheckFailed("This launch has already been used. Open the tutor again from your course.")
    cache.delete(_state_key(payload["s"]))
    return Redeemed(launch_id=payload["l"], claims=payload["c"])
