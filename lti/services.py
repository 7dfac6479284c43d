"""Writes of the LTI app: platform registrations and the tool's keys."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from lti_tool.models import Key, LtiDeployment, LtiRegistration


def tool_url(name: str) -> str:
    return settings.PUBLIC_BASE_URL + reverse(name)


def tool_urls() -> dict[str, str]:
    """The tool-side URLs an LMS administrator pastes into the LMS."""
    return {
        "oidc_initiation_url": tool_url("lti:login"),
        "target_link_uri": tool_url("lti:launch"),
        "redirect_uris": [tool_url("lti:launch")],
        "deep_linking_url": tool_url("lti:launch"),
        "public_jwk_url": tool_url("lti:jwks"),
        "dynamic_registration_url": tool_url("lti:register"),
        "canvas_configuration_url": tool_url("lti:canvas-config"),
    }


def key_ensure() -> Key:
    """The tool's current signing key, made on first use."""
    key = Key.objects.active().order_by("-datetime_created").first()
    return key or Key.objects.generate()


@dataclass(frozen=True)
class PlatformRegistered:
    registration: LtiRegistration
    deployment: LtiDeployment
    created: bool


@transaction.atomic
def platform_register(
    *,
    name: str,
    issuer: str,
    client_id: str,
    auth_login_url: str,
    auth_token_url: str,
    keyset_url: str,
    deployment_id: str,
    active: bool = True,
) -> PlatformRegistered:
    """Creates or updates the registration (issuer, client id) and its deployment."""
    registration, created = LtiRegistration.objects.update_or_create(
        issuer=issuer,
        client_id=client_id,
        defaults={
            "name": name,
            "auth_url": auth_login_url,
            "token_url": auth_token_url,
            "keyset_url": keyset_url,
            "is_active": active,
        },
    )
    deployment, _ = LtiDeployment.objects.update_or_create(
        registration=registration, deployment_id=deployment_id, defaults={"is_active": active}
    )
    key_ensure()
    return PlatformRegistered(registration=registration, deployment=deployment, created=created)


@transaction.atomic
def platform_activate(*, registration_id: int) -> LtiRegistration:
    registration = LtiRegistration.objects.select_for_update().get(pk=registration_id)
    registration.is_active = True
    registration.save(update_fields=["is_active", "datetime_modified"])
    registration.deployments.update(is_active=True)
    return registration


@dataclass(frozen=True)
class KeysRotated:
    new_key: Key
    retired: int


@transaction.atomic
def keys_rotate(*, retire_after: timedelta | None = None) -> KeysRotated:
    """Makes a new signing key; old keys stay in the JWKS until superseded for `retire_after`.

    Platforms cache our JWKS, and tokens signed moments before a rotation are still
    in flight, so a key leaves the JWKS only once it has been superseded for a
    while (LTI_KEY_RETIRE_AFTER_DAYS), never at the moment of rotation.
    """
    retire_after = retire_after if retire_after is not None else timedelta(days=settings.LTI_KEY_RETIRE_AFTER_DAYS)
    new_key = Key.objects.generate()
    now = timezone.now()
    active = list(Key.objects.active().select_for_update().order_by("datetime_created"))
    retired = 0
    for older, newer in itertools.pairwise(active):
        # `older` has been superseded since `newer` was created.
        if now - newer.datetime_created >= retire_after:
            older.is_active = False
            older.save(update_fields=["is_active", "datetime_modified"])
            retired += 1
    return KeysRotated(new_key=new_key, retired=retired)
