"""`POST /api-call` (a request on behalf of an account) and `GET /latest-version`.

`/api-call` only reaches the account's own provider: the origin (scheme, host, port) of the
account's base URL, or of the provider's configured `upstream-base-url` and
`oauth-endpoints`. Any other URL (IP literals, other ports, userinfo tricks, non-HTTP
schemes) is rejected with 400 before a connection is made. Redirects are followed only to the
same allowed origins. So a management key cannot turn the route into a server-side request
forgery tool against other hosts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from config import Config
from mgmt.context import MgmtContext
from mgmt.outbound import OutboundError, OutboundResponse, send
from mgmt.router import HttpError, MgmtRequest, MgmtResponse, Router
from pool import auth_index

logger = logging.getLogger(__name__)

API_CALL_TIMEOUT_SECONDS = 60.0
RELEASE_TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 5
TOKEN_PLACEHOLDER = "$TOKEN$"
ALLOWED_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

# Request headers the caller may not set: the client library derives them from the URL and
# body, and an Accept-Encoding would make the body arrive compressed.
_DROPPED_HEADERS = frozenset(
    {"host", "content-length", "connection", "transfer-encoding", "accept-encoding", "upgrade"}
)

# The `upstream-base-url` and `oauth-endpoints` keys of each auth-file type.
_UPSTREAM_KEYS: dict[str, tuple[str, ...]] = {
    "claude": ("claude",),
    "codex": ("codex", "openai"),
    "gemini": ("gemini-cli", "gemini"),
    "gemini-cli": ("gemini-cli", "gemini"),
    "antigravity": ("antigravity",),
}
_OAUTH_KEYS: dict[str, tuple[str, ...]] = {
    "claude": ("claude",),
    "codex": ("codex",),
    "gemini": ("gemini",),
    "gemini-cli": ("gemini",),
    "antigravity": ("antigravity",),
}
# Hosts of providers whose defaults the config does not list. Antigravity's Cloud Code
# endpoints as Quotio's warmup calls them (production, daily and daily sandbox); an
# `upstream-base-url.antigravity` entry in the config replaces them.
_BUILTIN_ORIGINS: dict[str, tuple[str, ...]] = {
    "antigravity": (
        "https://cloudcode-pa.googleapis.com",
        "https://daily-cloudcode-pa.googleapis.com",
        "https://daily-cloudcode-pa.sandbox.googleapis.com",
    ),
}


@dataclass(frozen=True)
class Origin:
    """Scheme, host (lower-case, no trailing dot) and port of a URL."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin | None:
        """Return the origin of an http(s) URL without userinfo, else None."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        if "@" in parts.netloc:
            return None
        if port is None:
            port = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname.rstrip(".").lower(), port)


@dataclass(frozen=True)
class AuthFileAccount:
    """An auth file found by its `auth_index`, with what `/api-call` needs from it."""

    path: Path
    file_type: str
    data: dict[str, Any]


def find_account(ctx: MgmtContext, wanted_index: str) -> AuthFileAccount | None:
    """Return the auth file whose CLIProxyAPI auth index is `wanted_index`."""
    auth_dir = ctx.config.current().auth_dir
    try:
        paths = sorted(auth_dir.glob("*.json"))
    except OSError:
        return None
    for path in paths:
        if path.name.startswith(".") or path.is_symlink():
            continue
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        file_type = str(data.get("type") or "unknown").lower()
        if auth_index(file_type, path) == wanted_index:
            return AuthFileAccount(path, file_type, data)
    return None


def _base_urls(data: dict[str, Any]) -> Iterable[str]:
    for value in (data.get("base_url"), (data.get("metadata") or {}).get("base_url")):
        if isinstance(value, str) and value:
            yield value


def allowed_origins(ctx: MgmtContext, account: AuthFileAccount) -> set[Origin]:
    """Return the origins `/api-call` may reach for `account`."""
    config: Config = ctx.config.current()
    urls: list[str] = list(_base_urls(account.data))
    pooled = ctx.account_for_file(account.path)
    if pooled is not None:
        urls.append(pooled.base_url)

    upstream_keys = _UPSTREAM_KEYS.get(account.file_type, ())
    configured = [
        config.upstream_base_urls[key] for key in upstream_keys if key in config.upstream_base_urls
    ]
    urls.extend(configured)
    if not configured:
        urls.extend(_BUILTIN_ORIGINS.get(account.file_type, ()))
    for key in _OAUTH_KEYS.get(account.file_type, ()):
        urls.extend((config.oauth_endpoints.get(key) or {}).values())

    return {origin for url in urls if (origin := Origin.of(url)) is not None}


def account_token(ctx: MgmtContext, account: AuthFileAccount) -> str:
    """Return the account's access token: the pool's (refreshed when expired), else the file's."""
    pooled = ctx.account_for_file(account.path)
    if pooled is not None and ctx.fresh_token is not None:
        return ctx.fresh_token(pooled)
    if pooled is not None and pooled.secret:
        return pooled.secret
    token = account.data.get("token") if isinstance(account.data.get("token"), dict) else {}
    candidates = (
        account.data.get("access_token"),
        token.get("access_token"),
        account.data.get("api_key"),
    )
    for value in candidates:
        if isinstance(value, str) and value:
            return value
    return ""


@dataclass(frozen=True)
class ApiCall:
    """A validated `/api-call` request body."""

    auth_index: str
    method: str
    url: str
    headers: dict[str, str]
    data: str | None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ApiCall:
        index = body.get("auth_index", body.get("authIndex", body.get("AuthIndex")))
        method = body.get("method")
        url = body.get("url")
        headers = body.get("header") or {}
        data = body.get("data")
        if body.get("proxy_url"):
            raise HttpError(400, "proxy_url is not supported: the account's proxy settings apply")
        if not isinstance(method, str) or not method.strip():
            raise HttpError(400, "missing method")
        if method.strip().upper() not in ALLOWED_METHODS:
            raise HttpError(400, f"invalid method {method!r}")
        if not isinstance(url, str) or not url.strip():
            raise HttpError(400, "missing url")
        if not isinstance(index, str) or not index:
            raise HttpError(
                400, "auth_index is required: api-call only calls an account's own provider"
            )
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise HttpError(400, "invalid body: header must map names to string values")
        if data is not None and not isinstance(data, str):
            raise HttpError(400, "invalid body: data must be a string")
        return cls(index, method.strip().upper(), url.strip(), dict(headers), data)


def _check_url(url: str, allowed: set[Origin]) -> None:
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise HttpError(400, "invalid url: it contains spaces or control characters")
    origin = Origin.of(url)
    if origin is None:
        raise HttpError(400, "invalid url: use an http:// or https:// URL without user info")
    if origin not in allowed:
        raise HttpError(
            400,
            f"url host {origin.host}:{origin.port} is not one of the account's provider hosts",
        )


def _response_json(response: OutboundResponse) -> dict[str, Any]:
    grouped: dict[str, list[str]] = {}
    for name, value in response.headers:
        grouped.setdefault(name, []).append(value)
    return {
        "status_code": response.status,
        "header": grouped,
        "body": response.body.decode("utf-8", errors="replace"),
    }


def api_call(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Perform the request with the account's token and return status, headers and body."""
    call = ApiCall.parse(request.json_object())
    account = find_account(ctx, call.auth_index)
    if account is None:
        raise HttpError(400, f"no account has auth_index {call.auth_index!r}")
    allowed = allowed_origins(ctx, account)
    _check_url(call.url, allowed)

    token = ""
    headers: list[tuple[str, str]] = [("Accept-Encoding", "identity")]
    for name, value in call.headers.items():
        if name.lower() in _DROPPED_HEADERS:
            continue
        if TOKEN_PLACEHOLDER in value:
            token = token or account_token(ctx, account)
            if not token:
                raise HttpError(400, "auth token not found")
            value = value.replace(TOKEN_PLACEHOLDER, token)
        headers.append((name, value))

    proxy_url = str(account.data.get("proxy_url") or "") or ctx.config.current().proxy_url
    method, url = call.method, call.url
    body = call.data.encode() if call.data is not None else None
    for _hop in range(MAX_REDIRECTS + 1):
        try:
            response = send(
                method, url, headers, body, timeout=API_CALL_TIMEOUT_SECONDS, proxy_url=proxy_url
            )
        except OutboundError as exc:
            logger.warning("management API: api-call for %s failed: %s", account.path.name, exc)
            raise HttpError(502, "request failed", message=str(exc)) from None
        location = response.header("location")
        if response.status not in (301, 302, 303, 307, 308) or not location:
            logger.info(
                "management API: api-call %s %s for %s returned HTTP %d",
                method,
                urlsplit(url).hostname,
                account.path.name,
                response.status,
            )
            return MgmtResponse(200, _response_json(response))
        url = urljoin(url, location)
        _check_url(url, allowed)
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method, body = "GET", None
    raise HttpError(502, "request failed", message=f"more than {MAX_REDIRECTS} redirects")


def latest_version(ctx: MgmtContext, _request: MgmtRequest) -> MgmtResponse:
    """Return `{"latest-version": tag}` from the configured release URL."""
    if not ctx.release_url:
        raise HttpError(
            503,
            "release_url_not_configured",
            message="no release URL is configured (mitmproxy option cliproxy_release_url)",
        )
    headers = [("Accept", "application/vnd.github+json"), ("User-Agent", "cliproxy")]
    try:
        response = send(
            "GET",
            ctx.release_url,
            headers,
            None,
            timeout=RELEASE_TIMEOUT_SECONDS,
            proxy_url=ctx.config.current().proxy_url,
        )
    except OutboundError as exc:
        logger.warning("management API: release check failed: %s", exc)
        raise HttpError(502, "request_failed", message=str(exc)) from None
    if response.status != 200:
        raise HttpError(
            502, "unexpected_status", message=f"release URL returned HTTP {response.status}"
        )
    try:
        release = json.loads(response.body)
    except ValueError as exc:
        raise HttpError(502, "decode_failed", message=str(exc)) from None
    tag = release.get("tag_name") if isinstance(release, dict) else None
    if not isinstance(tag, str) or not tag:
        raise HttpError(502, "invalid_response", message="release JSON has no tag_name")
    return MgmtResponse(200, {"latest-version": tag})


def register(router: Router, ctx: MgmtContext) -> None:
    """Add the tool routes to `router`."""
    router.add("POST", "/api-call", lambda request: api_call(ctx, request))
    router.add("GET", "/latest-version", lambda request: latest_version(ctx, request))
