"""An LTI 1.3 platform for the tests, outside the tool's process boundaries.

It serves its JWKS, a Moodle-style openid-configuration and registration
endpoint from its own HTTP server (a thread on 127.0.0.1), signs real RS256
id_tokens, and drives the tool's OIDC flow over HTTP like a browser would,
with a `requests.Session` as the browser's cookie jar.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from base64 import urlsafe_b64encode
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from django.core.management import call_command

from devlms.platform import LTI, USERS, DevUser, SigningKey, message_claims


@dataclass
class Recorded:
    keyset_fetches: int = 0
    registration_posts: list = field(default_factory=list)


class TestPlatform:
    __test__ = False  # not a pytest class

    def __init__(self, *, client_id: str = "tool-client-1", deployment_id: str = "deployment-1"):
        self.client_id = client_id
        self.deployment_id = deployment_id
        self.keys = [SigningKey.generate()]
        self.recorded = Recorded()
        self.registration_token = "reg-token-" + uuid.uuid4().hex
        self.registration_answer: dict | None = None  # set to override the registration response
        self.openid_issuer_override: str | None = None
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = urlsplit(self.path).path
                if path == "/jwks":
                    platform.recorded.keyset_fetches += 1
                    return self._send(200, {"keys": [key.jwk for key in platform.keys]})
                if path == "/.well-known/openid-configuration":
                    return self._send(200, platform.openid_configuration())
                return self._send(404, {"error": "not found"})

            def do_POST(self):
                if urlsplit(self.path).path != "/register":
                    return self._send(404, {"error": "not found"})
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                platform.recorded.registration_posts.append({"headers": dict(self.headers), "body": body})
                # Like Moodle's openid-registration.php: Bearer registration token required.
                if self.headers.get("Authorization") != f"Bearer {platform.registration_token}":
                    return self._send(401, {"error": "invalid registration token"})
                if platform.registration_answer is not None:
                    return self._send(200, platform.registration_answer)
                answer = dict(body)
                answer["client_id"] = platform.client_id
                tool_config = dict(body.get("https://purl.imsglobal.org/spec/lti-tool-configuration", {}))
                tool_config["deployment_id"] = platform.deployment_id
                answer["https://purl.imsglobal.org/spec/lti-tool-configuration"] = tool_config
                return self._send(200, answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # -- platform endpoints -----------------------------------------------------------------
    @property
    def auth_login_url(self) -> str:
        return self.issuer + "/auth"

    @property
    def token_url(self) -> str:
        return self.issuer + "/token"

    @property
    def keyset_url(self) -> str:
        return self.issuer + "/jwks"

    def openid_configuration(self) -> dict:
        """Shaped like Moodle 4.x's mod/lti/openid-configuration.php."""
        return {
            "issuer": self.openid_issuer_override or self.issuer,
            "token_endpoint": self.token_url,
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
            "jwks_uri": self.keyset_url,
            "authorization_endpoint": self.auth_login_url,
            "registration_endpoint": self.issuer + "/register",
            "scopes_supported": [
                "openid",
                "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
                "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly",
            ],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public", "pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "claims_supported": ["sub", "iss", "name", "given_name", "family_name", "email"],
            "https://purl.imsglobal.org/spec/lti-platform-configuration": {
                "product_family_code": "moodle",
                "version": "4.5",
                # Moodle lists them as strings (Canvas as {"type": ...} objects).
                "messages_supported": ["LtiResourceLinkRequest", "LtiDeepLinkingRequest"],
                "placements": ["AddContentMenu"],
                "variables": ["CourseSection.timeFrame.end", "ResourceLink.id"],
            },
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- registration with the tool ------------------------------------------------------------
    def register(self, *, name: str = "Test platform", deployment_id: str | None = None) -> dict:
        """Registers through the tool's command line, as an LMS administrator would."""
        from io import StringIO

        out = StringIO()
        call_command(*self.register_argv(name=name, deployment_id=deployment_id), stdout=out)
        return json.loads(out.getvalue())

    def register_argv(self, *, name: str = "Test platform", deployment_id: str | None = None) -> list[str]:
        """`manage.py lti_add_platform` with this platform's details (for another process's database too)."""
        return [
            "lti_add_platform",
            "--name", name,
            "--issuer", self.issuer,
            "--client-id", self.client_id,
            "--auth-login-url", self.auth_login_url,
            "--auth-token-url", self.token_url,
            "--keyset-url", self.keyset_url,
            "--deployment-id", deployment_id or self.deployment_id,
        ]  # fmt: skip

    def rotate_key(self, *, keep_old: bool = False) -> SigningKey:
        new = SigningKey.generate()
        self.keys = [*self.keys, new] if keep_old else [new]
        return new

    # -- launching --------------------------------------------------------------------------
    def login(self, browser: requests.Session, tool_base: str, *, extra: dict | None = None) -> dict:
        """Third-party login initiation; returns the tool's auth request parameters."""
        params = {
            "iss": self.issuer,
            "login_hint": "hint-" + uuid.uuid4().hex[:8],
            "target_link_uri": tool_base + "/lti/launch/",
            "client_id": self.client_id,
            "lti_deployment_id": self.deployment_id,
            **(extra or {}),
        }
        response = browser.get(tool_base + "/lti/login/", params=params, allow_redirects=False)
        assert response.status_code == 302, (response.status_code, response.text[:500])
        location = response.headers["Location"]
        assert location.startswith(self.auth_login_url + "?"), location
        auth = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        assert auth["client_id"] == self.client_id
        assert auth["response_type"] == "id_token" and auth["scope"] == "openid"
        return auth

    def claims(self, *, nonce, user: DevUser | str = "student", **overrides) -> dict:
        user = USERS[user] if isinstance(user, str) else user
        claims = message_claims(
            user=user,
            nonce="" if nonce is DROP else nonce,
            iss=self.issuer,
            client_id=self.client_id,
            deployment_id=self.deployment_id,
            message_type=overrides.pop("message_type", "LtiResourceLinkRequest"),
            course=overrides.pop("course", {"id": "course-42", "title": "Biology 1", "label": "BIO1"}),
            resource_link=overrides.pop("resource_link", {"id": "link-7", "title": "Biology tutor"}),
        )
        if nonce is DROP:
            claims.pop("nonce")
        dl_settings = claims.get("https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings")
        if dl_settings:
            dl_settings["deep_link_return_url"] = self.issuer + "/deep-link-return"
        for key, value in overrides.items():
            name = key if key in claims or not key.startswith("lti_") else LTI + key[4:]
            if value is DROP:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def sign(self, claims: dict, *, key: SigningKey | None = None, headers: dict | None = None) -> str:
        return (key or self.keys[-1]).sign(claims, headers=headers)

    def launch(
        self,
        browser: requests.Session,
        tool_base: str,
        *,
        user: str = "student",
        id_token=None,
        claims: dict | None = None,
        state: str | None = None,
        **overrides,
    ) -> requests.Response:
        """The whole flow: login initiation, then the signed id_token posted to the redirect_uri.

        `id_token` may be a callable `(claims) -> token` to forge the token from the claims.
        """
        auth = self.login(browser, tool_base)
        overrides.setdefault("nonce", auth["nonce"])
        claims = claims or self.claims(user=user, **overrides)
        token = id_token(claims) if callable(id_token) else (id_token or self.sign(claims))
        return browser.post(auth["redirect_uri"], data={"id_token": token, "state": state or auth["state"]})


DROP = object()


def b64(data: bytes) -> str:
    return urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_with_public_key(claims: dict, key: SigningKey) -> str:
    """Alg confusion: an HS256 token whose HMAC secret is the platform's public key PEM."""
    from jwcrypto.jwk import JWK

    public_pem = JWK(**key.jwk).export_to_pem()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.jwk["kid"]}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def unsigned(claims: dict, key: SigningKey) -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": key.jwk["kid"]}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}."


def url_with(base: str, **params) -> str:
    return base + "?" + urlencode(params)
