"""The development platform's identity, users, key pair and message claims."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from jwcrypto.jwk import JWK

from lti.launch import DATA_PRIVACY_LAUNCH
from lti.services import tool_url

LTI = "https://purl.imsglobal.org/spec/lti/claim/"
LIS = "http://purl.imsglobal.org/vocab/lis/v2/"
CLIENT_ID = "devlms-tutor"
DEPLOYMENT_ID = "devlms-deployment-1"
COURSE = {"id": "devlms-course-101", "label": "MATH101", "title": "Fractions and Ratios (demo course)"}
DEFAULT_LINK = {"id": "devlms-link-1", "title": "AI Tutor"}


@dataclass(frozen=True)
class DevUser:
    key: str
    sub: str
    name: str
    roles: tuple[str, ...]


USERS = {
    "student": DevUser("student", "devlms-student-1", "Ada Student", (LIS + "membership#Learner",)),
    "teacher": DevUser("teacher", "devlms-teacher-1", "Tom Teacher", (LIS + "membership#Instructor",)),
    "admin": DevUser(
        "admin",
        "devlms-admin-1",
        "Alex Admin",
        (LIS + "institution/person#Administrator", LIS + "system/person#Administrator", LIS + "membership#Instructor"),
    ),
}


def issuer() -> str:
    return settings.PUBLIC_BASE_URL + "/devlms"


def endpoints() -> dict[str, str]:
    base = issuer()
    return {
        "auth_login_url": f"{base}/auth/",
        "auth_token_url": f"{base}/token/",
        "keyset_url": f"{base}/jwks/",
        "deep_link_return_url": f"{base}/deep-link-return/",
    }


@dataclass(frozen=True)
class SigningKey:
    private_pem: bytes
    jwk: dict  # public JWK with kid/alg/use

    @classmethod
    def generate(cls) -> SigningKey:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cls.from_pem(pem)

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        public = json.loads(JWK.from_pem(pem).export_public())
        public.update(kid=JWK.from_pem(pem).thumbprint(), alg="RS256", use="sig")
        return cls(private_pem=pem, jwk=public)

    def sign(self, claims: dict, *, headers: dict | None = None, algorithm: str = "RS256") -> str:
        return jwt.encode(
            claims, self.private_pem, algorithm=algorithm, headers={"kid": self.jwk["kid"], **(headers or {})}
        )


def platform_key() -> SigningKey:
    """The dev platform's key pair, made once and kept in var/ (not the database: the
    JWKS view must answer while the tool's launch view waits on it)."""
    path = settings.VAR_DIR / "devlms_platform_key.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(SigningKey.generate().private_pem)
        path.chmod(0o600)
    return SigningKey.from_pem(path.read_bytes())


def message_claims(
    *,
    user: DevUser,
    nonce: str,
    message_type: str = "LtiResourceLinkRequest",
    resource_link: dict | None = None,
    iss: str | None = None,
    client_id: str = CLIENT_ID,
    deployment_id: str = DEPLOYMENT_ID,
    course: dict | None = None,
    lifetime: int = 300,
    target_link_uri: str | None = None,
    custom: dict | None = None,
    for_user: DevUser | None = None,
) -> dict:
    """The id_token claims of an LTI 1.3 launch, as a platform sends them.

    A Data Privacy Launch concerns a person, not a course: it has no context or resource link,
    and `for_user` says whose data it is about (the launching user's own by default).
    """
    now = int(time.time())
    claims = {
        "iss": iss or issuer(),
        "aud": client_id,
        "azp": client_id,
        "sub": user.sub,
        "iat": now,
        "exp": now + lifetime,
        "nonce": nonce,
        "name": user.name,
        LTI + "version": "1.3.0",
        LTI + "message_type": message_type,
        LTI + "deployment_id": deployment_id,
        LTI + "roles": list(user.roles),
        LTI + "tool_platform": {"guid": "devlms", "name": "Development LMS", "product_family_code": "devlms"},
        LTI + "launch_presentation": {"document_target": "iframe", "return_url": issuer() + "/"},
    }
    claims[LTI + "target_link_uri"] = target_link_uri or tool_url("lti:launch")
    if custom:
        claims[LTI + "custom"] = custom
    if message_type == DATA_PRIVACY_LAUNCH:
        person = for_user or user
        # The person's LMS id is `user_id` (pylti1p3's claim type, Canvas, other LTI libraries).
        claims[LTI + "for_user"] = {"user_id": person.sub, "roles": list(person.roles)}
        return claims
    claims[LTI + "context"] = course or COURSE
    if message_type == "LtiResourceLinkRequest":
        claims[LTI + "resource_link"] = resource_link or DEFAULT_LINK
    elif message_type == "LtiDeepLinkingRequest":
        claims["https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings"] = {
            "deep_link_return_url": endpoints()["deep_link_return_url"],
            "accept_types": ["ltiResourceLink"],
            "accept_presentation_document_targets": ["iframe", "window"],
            "accept_multiple": False,
            "data": "devlms-" + uuid.uuid4().hex[:8],
        }
    return claims
