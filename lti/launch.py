"""Validating LTI 1.3 launches.

pylti1p3 (through django-lti's tool configuration) checks the OIDC state, the
nonce was issued by us, registration, RS256 signature, expiry, deployment and
the message claims. This module adds what the 1EdTech Security Framework leaves
to the tool and pylti1p3 does not do:

* a nonce is used once: a re-posted id_token is refused (pylti1p3 never uses one up);
* `alg` must be RS256 before any key is looked up (no alg confusion);
* `aud` with several audiences needs `azp` = our client id, and every other
  audience must be trusted (LTI_TRUSTED_AUDIENCES);
* unknown or inactive deployments are refused, never created on the fly
  (django-lti's tool config creates them);
* a platform key set is cached, and fetched again when a token names a `kid`
  it does not hold (platforms rotate keys); a `kid` still missing after that
  fetch is not fetched for again for LTI_KEYSET_REFETCH_MIN_SECONDS (other
  kids are: a forged kid never delays a genuine rotation);
* the OIDC state may be bound to the browser by LTI Platform Storage instead of
  a cookie (see `lti.platform_storage`).

Every failure becomes `LaunchRefused` with plain words; nothing is stored
before every check has passed.

What is kept of a launch afterwards is decided here too. pylti1p3 would cache the
whole message (sub, name, email, roles, custom claims…) for 24 hours under
`lti1p3-launch-<uuid>`; the tool keeps only what a later step reads back:

* a Deep Linking request: the claims its response is signed with (issuer,
  audience, deployment, the platform's deep-linking settings), nothing about the
  person, for DEEP_LINK_MAX_AGE_SECONDS (the placement form's life);
* a Platform Storage launch: nothing on the server; the claims the product uses
  travel in the signed one-time ticket of the confirmation form;
* any other launch: nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import requests
from django.conf import settings
from django.core.cache import cache
from lti_tool.models import LtiDeployment, LtiRegistration
from lti_tool.utils import DjangoToolConfig
from pylti1p3.contrib.django import DjangoCacheDataStorage, DjangoMessageLaunch
from pylti1p3.deployment import Deployment
from pylti1p3.exception import LtiException

from lti.platform_storage import storage_state_get
from lti.roles import role_from_lti
from tutor.errors import DomainError
from tutor.models import Role

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
DL_CLAIM = "https://purl.imsglobal.org/spec/lti-dl/claim/"
NONCE_LIFETIME_SECONDS = 86400  # pylti1p3 keeps issued nonces this long
# A Deep Linking request is kept (without its person claims) as long as its placement form lives.
DEEP_LINK_MAX_AGE_SECONDS = 3600

# The claims the product reads from a launch (`claims_from_body`) and those a deep-linking
# response is built from. Email, picture, custom and platform claims are never kept.
USED_CLAIMS = (
    "iss",
    "aud",
    "azp",
    "sub",
    "name",
    "given_name",
    "family_name",
    CLAIM + "message_type",
    CLAIM + "version",
    CLAIM + "deployment_id",
    CLAIM + "roles",
    CLAIM + "context",
    CLAIM + "resource_link",
    CLAIM + "for_user",
    DL_CLAIM + "deep_linking_settings",
)
# What a Deep Linking request keeps until its response is sent: nothing about the person.
DEEP_LINK_CLAIMS = (
    "iss",
    "aud",
    "azp",
    CLAIM + "message_type",
    CLAIM + "version",
    CLAIM + "deployment_id",
    DL_CLAIM + "deep_linking_settings",
)


def claims_only(body: dict, names: tuple[str, ...]) -> dict:
    return {name: body[name] for name in names if name in body}


class LaunchRefused(DomainError):
    code = "launch_refused"
    status = 403
    title = "The tutor could not be opened"


def refused(code: str, message: str, status: int = 403, **detail: Any) -> LaunchRefused:
    return LaunchRefused(message, code=code, status=status, **detail)


class LaunchDataStorage(DjangoCacheDataStorage):
    """pylti1p3's cache storage without its `session-id` cookie.

    Over HTTPS pylti1p3 prefixes every key with a cookie-held session id, which
    breaks as soon as the browser blocks third-party cookies. Keys here are
    random (state, nonce, launch id); binding to the browser comes from the state
    cookie or from LTI Platform Storage.
    """

    def get_session_cookie_name(self):
        return None


class ToolConfig(DjangoToolConfig):
    """django-lti's tool config, except that an unknown deployment is refused, not created,
    and a login without `client_id` (optional in LTI 1.3) finds the issuer's only registration."""

    def find_registration_by_params(self, iss, client_id, *args, **kwargs):
        if client_id is None:
            candidates = list(LtiRegistration.objects.active().filter(issuer=iss)[:2])
            if len(candidates) != 1:
                return None
            self.registration = candidates[0]
            return self.registration.to_registration()
        return super().find_registration_by_params(iss, client_id, *args, **kwargs)

    def find_deployment(self, iss, deployment_id):
        return self.find_deployment_by_params(iss, deployment_id, None)

    def find_deployment_by_params(self, iss, deployment_id, client_id, *args, **kwargs):
        lookups = {"registration__issuer": iss, "registration__is_active": True, "deployment_id": deployment_id}
        if client_id is not None:
            lookups["registration__client_id"] = client_id
        self.deployment = LtiDeployment.objects.filter(**lookups).select_related("registration").first()
        if self.deployment is None:
            return None
        return Deployment().set_deployment_id(self.deployment.deployment_id)


DATA_PRIVACY_LAUNCH = "DataPrivacyLaunchRequest"


def _for_user_id(claim) -> str:
    """Whose data a Data Privacy Launch concerns: `for_user.user_id`, as pylti1p3's claim type,
    Canvas and other LTI libraries name it (`id` in an early draft's example, still read)."""
    if not isinstance(claim, dict):
        return ""
    return str(claim.get("user_id") or claim.get("id") or "")


@dataclass(frozen=True)
class LaunchClaims:
    """What the rest of the product needs from a validated launch, as plain values."""

    launch_id: str
    message_type: str
    issuer: str
    client_id: str
    deployment_id: str
    subject: str
    role: Role
    context_id: str
    context_title: str
    context_label: str
    resource_link_id: str | None
    resource_link_title: str
    full_name: str = field(default="", repr=False)
    given_name: str = field(default="", repr=False)
    family_name: str = field(default="", repr=False)
    for_user_id: str = ""  # a Data Privacy Launch: whose data it concerns
    raw: dict = field(default_factory=dict, repr=False)


def _keyset_cache_key(url: str) -> str:
    return "lti:keyset:" + hashlib.sha256(url.encode()).hexdigest()


def _kid_miss_cache_key(url: str, kid: str) -> str:
    return "lti:keyset-miss:" + hashlib.sha256(f"{url}\x00{kid}".encode()).hexdigest()


class TutorMessageLaunch(DjangoMessageLaunch):
    storage_bound_state: dict | None = None

    # -- state: a cookie, or LTI Platform Storage -------------------------------------------
    def validate_state(self):
        state = self._get_request_param("state")
        if not state:
            raise refused(
                "state_missing", "The launch arrived without its state. Launch the tutor again from your course.", 400
            )
        if self._cookie_service.get_cookie(state) == state:
            return self
        self.storage_bound_state = storage_state_get(state)
        if self.storage_bound_state is not None:
            return self  # bound to the browser by the Platform Storage check that follows
        raise refused(
            "state_mismatch",
            "This launch was not started from this browser (its state cookie is missing or different). "
            "If your browser blocks cookies in embedded pages, open the tutor in a new window from your course.",
        )

    # -- the platform's key set: cached, refetched for an unknown kid ---------------------------
    def fetch_public_key(self, key_set_url: str):
        cached = cache.get(_keyset_cache_key(key_set_url))
        if cached is not None:
            return cached["keyset"]
        return self._download_keyset(key_set_url)

    def _download_keyset(self, key_set_url: str):
        try:
            response = requests.get(key_set_url, timeout=settings.LTI_HTTP_TIMEOUT_SECONDS)
            response.raise_for_status()
            keyset = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise refused(
                "platform_keys_unavailable",
                "The tutor could not fetch your LMS's public keys to check this launch. Try again in a minute; "
                "if it persists, ask your LMS administrator to check the tool's key set URL.",
                502,
            ) from exc
        if not isinstance(keyset, dict) or not isinstance(keyset.get("keys"), list):
            raise refused("platform_keys_invalid", "Your LMS's key set URL did not return a JSON Web Key Set.", 502)
        cache.set(_keyset_cache_key(key_set_url), {"keyset": keyset}, settings.LTI_KEYSET_CACHE_SECONDS)
        return keyset

    def get_public_key(self):
        try:
            return super().get_public_key()
        except LtiException as exc:
            if "Unable to find public key" not in str(exc):
                raise
        # A kid we do not hold: the platform may have rotated its keys, so fetch its key set again.
        # Misses are remembered per kid, not per key set: a forged launch naming an unknown kid
        # must not make the next genuine new kid wait. A kid that was just missing is not fetched
        # for again for a while, and each fetch costs the caller a whole OIDC login of its own.
        key_set_url = self._registration.get_key_set_url()
        miss = _kid_miss_cache_key(key_set_url, str(self._jwt.get("header", {}).get("kid")))
        if cache.get(miss) is not None:
            raise LtiException("Unable to find public key")
        self._registration.set_key_set(self._download_keyset(key_set_url))
        try:
            return super().get_public_key()
        except LtiException as exc:
            if "Unable to find public key" in str(exc):
                cache.set(miss, 1, settings.LTI_KEYSET_REFETCH_MIN_SECONDS)
            raise

    # -- extra checks, before pylti1p3 stores anything -----------------------------------------
    def validate_algorithm(self):
        alg = self._jwt.get("header", {}).get("alg")
        if alg != "RS256":
            raise refused(
                "bad_algorithm",
                f"The launch is signed with {alg or 'no algorithm'}; LTI 1.3 launches must be signed with RS256.",
                alg=str(alg),
            )
        return self

    def validate_registration(self):
        try:
            return super().validate_registration()
        except LtiException:
            body = self._get_jwt_body()
            if registration_state(str(body.get("iss", "")), self.get_client_id()) == "pending":
                raise refused(
                    "platform_pending",
                    "This LMS's registration with the tutor is waiting for the tutor's administrator to activate it.",
                ) from None
            raise

    def validate_audience(self):
        body = self._get_jwt_body()
        aud = body.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        client_id = self.get_client_id()
        azp = body.get("azp")
        if azp is not None and azp != client_id:
            raise refused(
                "bad_audience", "The launch was issued for another tool (its authorized party is not this tool)."
            )
        if len(audiences) > 1:
            if azp is None:
                raise refused("bad_audience", "The launch names several audiences but no authorized party (azp).")
            untrusted = [a for a in audiences if a != client_id and a not in settings.LTI_TRUSTED_AUDIENCES]
            if untrusted:
                raise refused("bad_audience", "The launch is also addressed to an audience this tool does not trust.")
        return self

    def validate_deployment(self):
        try:
            return super().validate_deployment()
        except LtiException as exc:
            if "Unable to find deployment" not in str(exc):
                raise
            raise refused(
                "unknown_deployment",
                "This LMS deployment of the tutor is not registered (or not active) with the tutor. "
                "Ask your LMS administrator to register it.",
            ) from None

    def validate_launch_claims(self):
        body = self._get_jwt_body()
        message_type = body.get(CLAIM + "message_type")
        if message_type in {"LtiResourceLinkRequest", "LtiDeepLinkingRequest"} and not (
            body.get(CLAIM + "context") or {}
        ).get("id"):
            raise refused(
                "missing_claim", "The launch does not say which course it comes from (no context claim).", 400
            )
        if message_type == DATA_PRIVACY_LAUNCH:
            return self  # who may act on whose data is decided by the privacy page
        if role_from_lti(body.get(CLAIM + "roles") or []) is None:
            raise refused(
                "no_access_role",
                "The tutor is for a course's students, teachers and administrators; "
                "your role in this course has no access.",
            )
        return self

    def save_launch_data(self):
        """Replaces pylti1p3's, which caches the whole message for 24 h (and a hash of the
        id_token under the state, for a state check this class does not use)."""
        if self.storage_bound_state is None:
            self.follow_up_keep()
        return self

    def follow_up_keep(self) -> None:
        """Keeps what a later step reads back: a Deep Linking request's response claims."""
        body = self._get_jwt_body()
        if body.get(CLAIM + "message_type") != "LtiDeepLinkingRequest":
            return
        self.set_launch_data_lifetime(DEEP_LINK_MAX_AGE_SECONDS)
        self._session_service.save_launch_data(self._launch_id, claims_only(body, DEEP_LINK_CLAIMS))

    def use_nonce(self):
        """Atomically marks the nonce as used: a second post of the same id_token is refused."""
        body = self._get_jwt_body()
        key = "lti:used-nonce:" + hashlib.sha256(f"{body.get('iss')}\x00{body.get('nonce')}".encode()).hexdigest()
        if not cache.add(key, 1, NONCE_LIFETIME_SECONDS):
            raise refused("replayed", "This launch has already been used. Open the tutor again from your course.")
        return self

    def validate(self):
        self._validated = True
        try:
            return (
                self.validate_state()
                .validate_jwt_format()
                .validate_algorithm()
                .validate_nonce()
                .validate_registration()
                .validate_audience()
                .validate_jwt_signature()
                .validate_deployment()
                .validate_message()
                .validate_launch_claims()
                .use_nonce()
                .save_launch_data()
            )
        except Exception:
            self._validated = False
            raise


# pylti1p3's messages, in plain words (matched on the message's beginning).
_PLAIN_REASONS: list[tuple[str, str, str, int]] = [
    (
        "Missing id_token",
        "missing_token",
        "No launch token (id_token) was posted. Open the tutor from your course.",
        400,
    ),
    ("Invalid id_token", "malformed_token", "The launch token is malformed.", 400),
    ("Invalid JWT format", "malformed_token", "The launch token is malformed.", 400),
    ('"nonce" is empty', "bad_nonce", "The launch has no nonce, so it cannot be checked.", 400),
    (
        "Invalid Nonce",
        "bad_nonce",
        "The launch's one-time code (nonce) was not issued by this tool, or it has expired. "
        "Open the tutor again from your course.",
        403,
    ),
    ('"iss" is empty', "unknown_platform", "The launch does not say which LMS issued it.", 400),
    (
        "Registration not found",
        "unknown_platform",
        "This LMS is not registered with the tutor, or its registration is not active. "
        "Ask your LMS administrator to register the tool.",
        403,
    ),
    (
        "Client id not registered",
        "unknown_platform",
        "This LMS is not registered with the tutor under this client id.",
        403,
    ),
    ("JWT KID not found", "unknown_key", "The launch does not say which key signed it (no kid).", 403),
    ("JWT ALG not found", "bad_algorithm", "The launch does not say how it was signed (no alg).", 403),
    ("Unable to find public key", "unknown_key", "The launch was signed with a key your LMS does not publish.", 403),
    (
        "Can't decode id_token: Signature has expired",
        "expired",
        "The launch has expired. Open the tutor again from your course.",
        403,
    ),
    (
        "Can't decode id_token: The token is not yet valid",
        "not_yet_valid",
        "The launch is dated in the future; check the LMS server's clock.",
        403,
    ),
    (
        "Can't decode id_token: Signature verification failed",
        "bad_signature",
        "The launch's signature does not match your LMS's key.",
        403,
    ),
    ("Can't decode id_token", "bad_signature", "The launch's signature could not be verified.", 403),
    ("Must have a user", "missing_claim", "The launch does not say who is launching (no sub claim).", 400),
    ("Incorrect version", "missing_claim", "The launch is not an LTI 1.3.0 message.", 400),
    ("Missing Roles Claim", "missing_claim", "The launch does not state your role in the course.", 400),
    (
        "Missing Resource Link Id",
        "missing_claim",
        "The launch does not say which placement of the tutor was opened.",
        400,
    ),
    ("Invalid message type", "missing_claim", "The launch does not state its LTI message type.", 400),
    ("Unrecognized message type", "wrong_claim", "The launch's LTI message type is not one the tutor handles.", 400),
    ("Missing Deep Linking", "missing_claim", "The deep linking request has no deep linking settings.", 400),
    ("Must support resource link", "wrong_claim", "The LMS does not accept LTI resource links from deep linking.", 400),
    ("Must support a presentation", "wrong_claim", "The deep linking request names no presentation target.", 400),
    ("deployment_id is not set", "missing_claim", "The launch does not name its deployment.", 400),
]


def plain_refusal(exc: LtiException) -> LaunchRefused:
    text = str(exc)
    for prefix, code, message, status in _PLAIN_REASONS:
        if text.startswith(prefix):
            return refused(code, message, status)
    return refused("invalid_launch", "The launch could not be validated.", 400)


def launch_validate(request) -> tuple[TutorMessageLaunch, LaunchClaims]:
    """Validates the launch POSTed in `request`; raises LaunchRefused with the reason."""
    message_launch = TutorMessageLaunch(request, ToolConfig(), launch_data_storage=LaunchDataStorage())
    try:
        body = message_launch.get_launch_data()
    except LtiException as exc:
        raise plain_refusal(exc) from exc
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        # Claims of the wrong JSON type (say a string where an object belongs) trip pylti1p3.
        raise refused("wrong_claim", "The launch's claims are not shaped as LTI 1.3 requires.", 400) from exc
    return message_launch, claims_from_body(message_launch.get_launch_id(), body)


def claims_from_body(launch_id: str, body: dict) -> LaunchClaims:
    context = body.get(CLAIM + "context") or {}
    resource_link = body.get(CLAIM + "resource_link") or {}
    aud = body.get("aud")
    return LaunchClaims(
        launch_id=launch_id,
        message_type=body.get(CLAIM + "message_type", ""),
        issuer=body["iss"],
        client_id=aud[0] if isinstance(aud, list) else aud,
        deployment_id=body.get(CLAIM + "deployment_id", ""),
        subject=body.get("sub", ""),
        role=role_from_lti(body.get(CLAIM + "roles") or []),
        context_id=str(context.get("id", "")),
        context_title=str(context.get("title", ""))[:500],
        context_label=str(context.get("label", ""))[:255],
        resource_link_id=str(resource_link["id"]) if resource_link.get("id") else None,
        resource_link_title=str(resource_link.get("title", ""))[:500],
        full_name=str(body.get("name", "")),
        given_name=str(body.get("given_name", "")),
        family_name=str(body.get("family_name", "")),
        for_user_id=_for_user_id(body.get(CLAIM + "for_user")),
        raw=body,
    )


def launch_confirmed(request, *, launch_id: str, body: dict) -> tuple[TutorMessageLaunch, LaunchClaims]:
    """A Platform Storage launch, validated before its confirmation, from the claims its signed
    ticket carried; a Deep Linking request among them is kept for its response."""
    message_launch = TutorMessageLaunch(request, ToolConfig(), launch_data_storage=LaunchDataStorage())
    message_launch.set_launch_id(launch_id).set_auto_validation(enable=False).set_jwt({"body": body})
    try:
        message_launch.set_restored().validate_registration()
    except LtiException as exc:  # the registration was deactivated in between
        raise refused("launch_gone", "This launch has expired. Open the tutor again from your course.") from exc
    message_launch.follow_up_keep()
    return message_launch, claims_from_body(launch_id, body)


def restore_launch(request, launch_id: str) -> tuple[TutorMessageLaunch, LaunchClaims]:
    """A Deep Linking request validated earlier (its response claims are cached), for its response."""
    try:
        message_launch = TutorMessageLaunch.from_cache(
            launch_id, request, ToolConfig(), launch_data_storage=LaunchDataStorage()
        )
    except LtiException as exc:
        raise refused("launch_gone", "This launch has expired. Open the tutor again from your course.") from exc
    return message_launch, claims_from_body(launch_id, message_launch.get_launch_data())


def registration_state(issuer: str, client_id: str | None) -> str:
    """'active', 'pending' or 'unknown', to explain a refused login in plain words."""
    registrations = LtiRegistration.objects.filter(issuer=issuer)
    if client_id:
        registrations = registrations.filter(client_id=client_id)
    if registrations.filter(is_active=True).exists():
        return "active"
    return "pending" if registrations.exists() else "unknown"
