"""FakeOAuthServer: an HTTPS OAuth provider on 127.0.0.1 for the OAuth layer's tests.

It plays the three providers' authorization servers at once, choosing behaviour by client id:

- `GET /authorize` records the PKCE challenge and redirects (302) to `redirect_uri` with `code`
  and `state`, as the provider would redirect the user's browser (`authorize()` follows it
  without a browser);
- `POST /token` accepts JSON (Claude) and form (Codex, Gemini) bodies. The
  authorization_code grant checks the PKCE verifier, redirect URI, client id and, for Gemini,
  the client secret. The refresh_token grant issues a new access token and a rotated refresh
  token and revokes the old one. Codex responses contain an `id_token` JWT, Claude responses
  `account` and `organization` objects;
- `GET /userinfo` returns the email for a valid access token (Google's userinfo);
- `POST /v1internal:loadCodeAssist` returns `cloudaicompanionProject` (Code Assist).

Knobs: `access_ttl`, `token_delay` (seconds to delay each token response), `fail_next()`
(respond with 5xx), `reject_refresh_token()` (respond with invalid_grant), `omit_refresh_token`.
Counters: `grant_calls[grant_type]`, `refresh_calls[refresh_token]`.

It serves HTTPS with a throw-away CA, because oauthlib rejects plain-http token URLs; pass
`http_settings()` (which trusts that CA) to the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import secrets
import shutil
import ssl
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from oauth.http import HttpSettings
from oauth.providers import (
    CLAUDE_CLIENT_ID,
    CODEX_CLIENT_ID,
    GEMINI_CLI_CLIENT_ID,
    GEMINI_CLI_CLIENT_SECRET,
)

OPENAI_AUTH_CLAIM = "https://api.openai.com/auth"


@dataclass
class FakeAccount:
    """The identity the fake reports for every login."""

    email: str = "user@example.com"
    chatgpt_account_id: str = "acct-1234"
    chatgpt_plan_type: str = "plus"
    account_uuid: str = "8b7c6d5e-0000-4000-8000-000000000001"
    organization_uuid: str = "8b7c6d5e-0000-4000-8000-0000000000aa"
    organization_name: str = "Example Org"
    project_id: str | None = "fake-project-123"


@dataclass
class _PendingCode:
    client_id: str
    redirect_uri: str
    state: str
    scope: str
    challenge: str | None
    challenge_method: str | None


@dataclass
class TokenRequest:
    """One recorded call of `/token`: how the body was encoded and its fields."""

    content_type: str
    fields: dict[str, Any]
    authorization: str | None = None


@dataclass
class _State:
    codes: dict[str, _PendingCode] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # refresh token -> client id
    access_tokens: set[str] = field(default_factory=set)
    rejected_refresh_tokens: set[str] = field(default_factory=set)
    failures_left: int = 0
    failure_status: int = 503


class FakeOAuthServer:
    """A threaded HTTPS OAuth server on an ephemeral loopback port; use it as a context manager."""

    def __init__(
        self,
        *,
        access_ttl: int = 3600,
        account: FakeAccount | None = None,
    ) -> None:
        self.access_ttl = access_ttl
        self.account = account or FakeAccount()
        self.token_delay = 0.0
        self.omit_refresh_token = False
        self.grant_calls: Counter[str] = Counter()
        self.refresh_calls: Counter[str] = Counter()
        self.challenges: dict[str, str] = {}  # state -> PKCE code challenge
        self.token_requests: list[TokenRequest] = []
        self.load_code_assist_bodies: list[Any] = []
        self.userinfo_calls = 0
        self._client_secrets = {GEMINI_CLI_CLIENT_ID: GEMINI_CLI_CLIENT_SECRET}
        self._state = _State()
        self._lock = threading.Lock()
        self._counter = 0
        self._cert_dir: Path | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle

    def start(self) -> FakeOAuthServer:
        """Create the CA and certificate, bind 127.0.0.1:0 and serve in a daemon thread."""
        self._cert_dir = Path(tempfile.mkdtemp(prefix="fake-oauth-"))
        context = _server_context(self._cert_dir)
        server = _TLSServer(("127.0.0.1", 0), _Handler, context)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-oauth", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and delete the certificate files."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._cert_dir is not None:
            shutil.rmtree(self._cert_dir, ignore_errors=True)
            self._cert_dir = None

    def __enter__(self) -> FakeOAuthServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Addresses and settings for the code under test

    @property
    def base_url(self) -> str:
        """`https://127.0.0.1:<port>`."""
        assert self._server is not None, "start() the server first"
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def ca_path(self) -> str:
        """Path of the PEM CA certificate that signed the server's certificate."""
        assert self._cert_dir is not None, "start() the server first"
        return str(self._cert_dir / "ca.pem")

    def http_settings(self, timeout: float = 10.0) -> HttpSettings:
        """Return HttpSettings that trust this server's CA."""
        return HttpSettings(timeout=timeout, verify=self.ca_path, proxy_url="direct")

    def endpoints_config(self) -> dict[str, dict[str, str]]:
        """Return an `oauth-endpoints` mapping that points every provider here."""
        common = {"authorize-url": f"{self.base_url}/authorize", "token-url": f"{self.base_url}/token"}
        return {
            "claude": dict(common),
            "codex": dict(common),
            "gemini": {
                **common,
                "userinfo-url": f"{self.base_url}/userinfo?alt=json",
                "code-assist-url": self.base_url,
            },
        }

    # Knobs

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Respond to the next `count` token requests with HTTP `status`."""
        with self._lock:
            self._state.failures_left = count
            self._state.failure_status = status

    def reject_refresh_token(self, refresh_token: str) -> None:
        """Respond with invalid_grant to `refresh_token` from now on."""
        with self._lock:
            self._state.rejected_refresh_tokens.add(refresh_token)

    def issue_refresh_token(self, client_id: str) -> str:
        """Create a valid refresh token for `client_id` without a login, for refresh tests."""
        with self._lock:
            token = self._new_token_locked("rt")
            self._state.refresh_tokens[token] = client_id
            return token

    def is_valid_refresh_token(self, refresh_token: str) -> bool:
        """Whether `refresh_token` would be accepted now."""
        with self._lock:
            return (
                refresh_token in self._state.refresh_tokens
                and refresh_token not in self._state.rejected_refresh_tokens
            )

    def is_valid_access_token(self, access_token: str) -> bool:
        """Whether `access_token` was issued by this server."""
        with self._lock:
            return access_token in self._state.access_tokens

    # Browser simulation

    def authorize(self, url: str) -> str:
        """Open an authorization URL as a browser would and return the redirect's Location."""
        response = requests.get(url, allow_redirects=False, verify=self.ca_path, timeout=10)
        if response.status_code != 302:
            raise AssertionError(f"authorize returned {response.status_code}: {response.text}")
        return response.headers["Location"]

    # Request handling (called from the server's threads)

    def handle_authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        for required in ("client_id", "redirect_uri", "state", "response_type"):
            if not query.get(required):
                return _json(400, {"error": "invalid_request", "error_description": f"{required} is missing"})
        if query["response_type"] != "code":
            return _json(400, {"error": "unsupported_response_type"})
        method = query.get("code_challenge_method")
        if query.get("code_challenge") and method != "S256":
            return _json(400, {"error": "invalid_request", "error_description": "use S256"})

        with self._lock:
            code = self._new_token_locked("code")
            self._state.codes[code] = _PendingCode(
                client_id=query["client_id"],
                redirect_uri=query["redirect_uri"],
                state=query["state"],
                scope=query.get("scope", ""),
                challenge=query.get("code_challenge"),
                challenge_method=method,
            )
            if query.get("code_challenge"):
                self.challenges[query["state"]] = query["code_challenge"]
        location = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query["state"]})
        return 302, {"Location": location}, b""

    def handle_token(
        self, content_type: str, body: bytes, authorization: str | None
    ) -> tuple[int, dict[str, str], bytes]:
        if "json" in content_type:
            try:
                fields = json.loads(body)
            except ValueError:
                return _json(400, {"error": "invalid_request", "error_description": "bad JSON"})
        else:
            fields = {key: values[0] for key, values in parse_qs(body.decode()).items()}
        grant_type = str(fields.get("grant_type", ""))

        with self._lock:
            self.token_requests.append(TokenRequest(content_type, dict(fields), authorization))
            self.grant_calls[grant_type] += 1
            if grant_type == "refresh_token":
                self.refresh_calls[str(fields.get("refresh_token"))] += 1
            delay = self.token_delay
            failing = self._state.failures_left > 0
            if failing:
                self._state.failures_left -= 1
                failure_status = self._state.failure_status

        if delay:
            time.sleep(delay)
        if failing:
            return failure_status, {"Content-Type": "text/html"}, b"<html>temporarily unavailable</html>"

        with self._lock:
            if grant_type == "authorization_code":
                return self._exchange_code_locked(fields)
            if grant_type == "refresh_token":
                return self._refresh_locked(fields)
        return _json(400, {"error": "unsupported_grant_type"})

    def handle_userinfo(self, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.userinfo_calls += 1
            if not self._bearer_valid_locked(authorization):
                return _json(401, {"error": "invalid_token"})
        return _json(200, {"id": "1234567890", "email": self.account.email, "verified_email": True})

    def handle_load_code_assist(
        self, authorization: str | None, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.load_code_assist_bodies.append(json.loads(body or b"null"))
            if not self._bearer_valid_locked(authorization):
                return _json(401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}})
        response_body: dict[str, Any] = {"currentTier": {"id": "free-tier"}}
        if self.account.project_id:
            response_body["cloudaicompanionProject"] = self.account.project_id
        return _json(200, response_body)

    # Grants (called with the lock held)

    def _exchange_code_locked(self, fields: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        code = str(fields.get("code", ""))
        pending = self._state.codes.pop(code, None)
        if pending is None:
            return _json(400, {"error": "invalid_grant", "error_description": "unknown or used code"})
        client_id = str(fields.get("client_id", ""))
        if client_id != pending.client_id:
            return _json(400, {"error": "invalid_client"})
        if fields.get("redirect_uri") != pending.redirect_uri:
            return _json(400, {"error": "invalid_grant", "error_description": "redirect_uri mismatch"})
        secret = self._client_secrets.get(client_id)
        if secret is not None and fields.get("client_secret") != secret:
            return _json(401, {"error": "invalid_client"})
        if pending.challenge is not None:
            verifier = str(fields.get("code_verifier", ""))
            if _s256(verifier) != pending.challenge:
                return _json(400, {"error": "invalid_grant", "error_description": "PKCE verification failed"})
        if client_id == CLAUDE_CLIENT_ID and fields.get("state") != pending.state:
            return _json(400, {"error": "invalid_request", "error_description": "state mismatch"})
        return _json(200, self._token_response_locked(client_id, pending.scope, include_refresh=True))

    def _refresh_locked(self, fields: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        refresh_token = str(fields.get("refresh_token", ""))
        client_id = str(fields.get("client_id", ""))
        owner = self._state.refresh_tokens.get(refresh_token)
        if owner is None or refresh_token in self._state.rejected_refresh_tokens:
            return _json(400, {"error": "invalid_grant", "error_description": "refresh token is invalid"})
        if owner != client_id:
            return _json(400, {"error": "invalid_client"})
        secret = self._client_secrets.get(client_id)
        if secret is not None and fields.get("client_secret") != secret:
            return _json(401, {"error": "invalid_client"})
        include_refresh = not self.omit_refresh_token
        if include_refresh:
            # Rotation: the used refresh token stops working.
            del self._state.refresh_tokens[refresh_token]
        body = self._token_response_locked(client_id, str(fields.get("scope", "")), include_refresh)
        return _json(200, body)

    def _token_response_locked(self, client_id: str, scope: str, include_refresh: bool) -> dict[str, Any]:
        access_token = self._new_token_locked("at")
        self._state.access_tokens.add(access_token)
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
            "scope": scope,
        }
        if include_refresh:
            refresh_token = self._new_token_locked("rt")
            self._state.refresh_tokens[refresh_token] = client_id
            body["refresh_token"] = refresh_token
        if client_id == CODEX_CLIENT_ID:
            body["id_token"] = make_codex_id_token(self.account, client_id)
        if client_id == CLAUDE_CLIENT_ID:
            body["account"] = {"uuid": self.account.account_uuid, "email_address": self.account.email}
            body["organization"] = {
                "uuid": self.account.organization_uuid,
                "name": self.account.organization_name,
            }
        return body

    def _bearer_valid_locked(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        return authorization[len("Bearer ") :] in self._state.access_tokens

    def _new_token_locked(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter}-{secrets.token_urlsafe(8)}"


def make_codex_id_token(account: FakeAccount, client_id: str = CODEX_CLIENT_ID) -> str:
    """Return an id token JWT with the claims the Codex login reads; the signature is fake."""
    now = int(time.time())
    claims = {
        "iss": "https://auth.openai.com",
        "aud": [client_id],
        "sub": "auth0|fake",
        "iat": now,
        "exp": now + 3600,
        "email": account.email,
        "email_verified": True,
        OPENAI_AUTH_CLAIM: {
            "chatgpt_account_id": account.chatgpt_account_id,
            "chatgpt_plan_type": account.chatgpt_plan_type,
            "chatgpt_user_id": "user-fake",
        },
    }
    header = {"alg": "RS256", "typ": "JWT", "kid": "fake"}
    return ".".join(
        (_b64url(json.dumps(header).encode()), _b64url(json.dumps(claims).encode()), _b64url(b"fake-signature"))
    )


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeOAuthServer

    def __init__(self, address: tuple[str, int], handler: type, context: ssl.SSLContext) -> None:
        super().__init__(address, handler)
        self.ssl_context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs in the request's own thread, so a slow client cannot block
        # the accept loop.
        try:
            tls = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(tls, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _TLSServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        fake = self.server.fake
        if parts.path == "/authorize":
            self._send(*fake.handle_authorize(query))
        elif parts.path == "/userinfo":
            self._send(*fake.handle_userinfo(self.headers.get("Authorization")))
        else:
            self._send(*_json(404, {"error": "not_found"}))

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        fake = self.server.fake
        authorization = self.headers.get("Authorization")
        if path == "/token":
            content_type = self.headers.get("Content-Type", "")
            self._send(*fake.handle_token(content_type, body, authorization))
        elif path == "/v1internal:loadCodeAssist":
            self._send(*fake.handle_load_code_assist(authorization, body))
        else:
            self._send(*_json(404, {"error": "not_found"}))

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass


def _json(status: int, payload: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _s256(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode()).digest())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _server_context(directory: Path) -> ssl.SSLContext:
    """Write a CA and a 127.0.0.1 certificate it signed into `directory`; return a server context."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cliproxy fake OAuth CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_path = directory / "ca.pem"
    cert_path = directory / "server.pem"
    key_path = directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


class FakeClock:
    """A settable clock for the OAuth layer's `clock` parameters."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        """Move the clock forward by `timedelta(**delta)`."""
        self.now += timedelta(**delta)
