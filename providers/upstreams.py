"""Sending a client request to an account's upstream: destination and credentials.

`prepare_upstream()` rewrites a request in place for one account: the URL (the account's base
URL plus the upstream path for the route), the credentials (and only the credentials: every
other client header is forwarded unchanged, so the upstream sees the real client), the
account's configured extra headers, and the model name when the account maps an alias.

Credentials per upstream kind:

| kind | path | credentials |
|---|---|---|
| Claude OAuth | /v1/messages | `Authorization: Bearer`, `oauth-2025-04-20` added to `anthropic-beta` |
| Claude API key | /v1/messages | `x-api-key` |
| Codex OAuth | /responses under the ChatGPT backend | `Authorization: Bearer`, `chatgpt-account-id` |
| Codex / OpenAI API key | /responses, /chat/completions | `Authorization: Bearer` |
| Gemini API key | /v1beta/models/{model}:{method} | `x-goog-api-key` |
| Gemini CLI OAuth | /v1internal:{method} (body wrapped) | `Authorization: Bearer` |
| OpenAI-compatible | /chat/completions, /responses | `Authorization: Bearer` when a key is set |
"""

import functools
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import http

from pool.account import Account, UpstreamKind
from providers.geminicli import wrap_count_tokens, wrap_request
from providers.dialects import Dialect, Operation, Route

# Every place a client may put a credential; none of them is forwarded upstream.
CLIENT_CREDENTIAL_HEADERS = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
)
CLIENT_CREDENTIAL_QUERY = ("key", "auth_token", "access_token")
CLAUDE_OAUTH_BETA = "oauth-2025-04-20"
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"

# The upstream kinds that serve each client dialect without translation.
KINDS_FOR_DIALECT: dict[Dialect, frozenset[UpstreamKind]] = {
    Dialect.ANTHROPIC: frozenset({UpstreamKind.CLAUDE_OAUTH, UpstreamKind.CLAUDE_KEY}),
    Dialect.OPENAI_RESPONSES: frozenset(
        {UpstreamKind.CODEX_OAUTH, UpstreamKind.CODEX_KEY, UpstreamKind.OPENAI_COMPAT}
    ),
    Dialect.OPENAI_CHAT: frozenset({UpstreamKind.CODEX_KEY, UpstreamKind.OPENAI_COMPAT}),
    Dialect.GEMINI: frozenset({UpstreamKind.GEMINI_KEY, UpstreamKind.GEMINI_CLI}),
}

ROUTES_FOR_KIND: dict[UpstreamKind, str] = {
    UpstreamKind.CLAUDE_OAUTH: "/v1/messages",
    UpstreamKind.CLAUDE_KEY: "/v1/messages",
    UpstreamKind.CODEX_OAUTH: "/v1/responses",
    UpstreamKind.CODEX_KEY: "/v1/responses or /v1/chat/completions",
    UpstreamKind.OPENAI_COMPAT: "/v1/chat/completions or /v1/responses",
    UpstreamKind.GEMINI_KEY: "/v1beta/models/{model}:generateContent",
    UpstreamKind.GEMINI_CLI: "/v1beta/models/{model}:generateContent",
}


class UnsupportedOperation(ValueError):
    """The account's upstream cannot serve this operation (e.g. count_tokens on Codex)."""


_CREDENTIAL_HEADER_NAMES = frozenset(name.encode() for name in CLIENT_CREDENTIAL_HEADERS)
_CREDENTIAL_QUERY_MARKERS = tuple(name.encode() + b"=" for name in CLIENT_CREDENTIAL_QUERY)


def strip_client_credentials(request: http.Request) -> None:
    """Remove every credential the client sent, headers and query parameters alike."""
    # Runs on every request: one pass over the raw header fields, and the query is parsed
    # only when its raw text mentions a credential parameter.
    fields = request.headers.fields
    if any(name.lower() in _CREDENTIAL_HEADER_NAMES for name, _ in fields):
        request.headers.fields = tuple(
            field for field in fields if field[0].lower() not in _CREDENTIAL_HEADER_NAMES
        )
    raw_path = request.data.path
    if b"?" in raw_path and any(marker in raw_path for marker in _CREDENTIAL_QUERY_MARKERS):
        query = request.query
        for name in CLIENT_CREDENTIAL_QUERY:
            query.pop(name, None)


@dataclass(frozen=True)
class UpstreamTarget:
    """The parts of an upstream base URL that a request is pointed at."""

    scheme: bytes
    host: str
    port: int
    netloc: str
    base_path: str


@functools.lru_cache(maxsize=1024)
def upstream_target(base_url: str) -> UpstreamTarget:
    """Split a base URL once; every request to that account reuses the result."""
    base = urlsplit(base_url)
    return UpstreamTarget(
        scheme=base.scheme.encode(),
        host=base.hostname or "",
        port=base.port or (443 if base.scheme == "https" else 80),
        netloc=base.netloc,
        base_path=base.path.rstrip("/"),
    )


def upstream_path(account: Account, route: Route, model: str) -> str:
    """Return the path (after the base URL's own path) for `route` on the account's upstream."""
    kind = account.kind
    operation = route.operation

    if kind in (UpstreamKind.CLAUDE_OAUTH, UpstreamKind.CLAUDE_KEY):
        return "/v1/messages/count_tokens" if operation is Operation.COUNT_TOKENS else "/v1/messages"
    if kind is UpstreamKind.GEMINI_KEY:
        return f"/{route.api_version}/models/{model}:{route.gemini_method}"
    if kind is UpstreamKind.GEMINI_CLI:
        return f"/v1internal:{route.gemini_method}"
    if operation is Operation.COUNT_TOKENS:
        raise UnsupportedOperation("token counting is not available on OpenAI-style upstreams")
    if route.dialect is Dialect.OPENAI_RESPONSES:
        return "/responses"
    if operation is Operation.COMPLETIONS:
        return "/completions"
    return "/chat/completions"


def prepare_upstream(
    request: http.Request,
    account: Account,
    route: Route,
    upstream_model: str,
    body: dict[str, Any] | None,
    requested_model: str,
) -> bool:
    """Rewrite `request` in place to go to `account`'s upstream with its credentials.

    Returns True when the upstream will stream a response that the client requested as one JSON
    document, because the ChatGPT Codex backend only streams. The caller then collects the stream.
    """
    strip_client_credentials(request)

    target = upstream_target(account.base_url)
    path = target.base_path + upstream_path(account, route, upstream_model)
    _, _, query = request.path.partition("?")
    if account.kind is UpstreamKind.GEMINI_CLI and route.gemini_method == "streamGenerateContent":
        if "alt=sse" not in query.split("&"):
            query = f"{query}&alt=sse" if query else "alt=sse"

    # The data fields are set directly: the property setters would rebuild the Host header
    # after each of them, and it is set once here.
    data = request.data
    data.scheme = target.scheme
    data.host = target.host
    data.port = target.port
    data.path = (f"{path}?{query}" if query else path).encode("utf-8", "surrogateescape")
    if data.authority:
        data.authority = target.netloc.encode()
    request.headers["host"] = target.netloc

    _set_credentials(request, account)
    _apply_account_headers(request, account)

    collect_stream = False
    rewrite = False
    if body is not None and upstream_model != requested_model and "model" in body:
        body["model"] = upstream_model
        rewrite = True
    if account.kind is UpstreamKind.CODEX_OAUTH and body is not None and body.get("stream") is not True:
        body["stream"] = True
        collect_stream = rewrite = True

    if account.kind is UpstreamKind.GEMINI_CLI:
        _wrap_code_assist_body(request, account, upstream_model, body)
    elif rewrite:
        set_json_body(request, body)
    return collect_stream


def set_json_body(request: http.Request, body: Any) -> None:
    """Replace the body with `body` as compact JSON, uncompressed, with a correct length."""
    if "content-encoding" in request.headers:
        del request.headers["content-encoding"]
    request.content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _set_credentials(request: http.Request, account: Account) -> None:
    kind = account.kind
    headers = request.headers

    if kind is UpstreamKind.CLAUDE_OAUTH:
        headers["authorization"] = f"Bearer {account.secret}"
        betas = [beta.strip() for beta in headers.get("anthropic-beta", "").split(",") if beta.strip()]
        if CLAUDE_OAUTH_BETA not in betas:
            betas.append(CLAUDE_OAUTH_BETA)
        headers["anthropic-beta"] = ",".join(betas)
    elif kind is UpstreamKind.CLAUDE_KEY:
        headers["x-api-key"] = account.secret
    elif kind is UpstreamKind.CODEX_OAUTH:
        headers["authorization"] = f"Bearer {account.secret}"
        if account.account_id:
            headers["chatgpt-account-id"] = account.account_id
    elif kind is UpstreamKind.GEMINI_KEY:
        headers["x-goog-api-key"] = account.secret
    elif kind is UpstreamKind.GEMINI_CLI:
        headers["authorization"] = f"Bearer {account.secret}"
    elif account.secret:
        headers["authorization"] = f"Bearer {account.secret}"

    if kind in (UpstreamKind.CLAUDE_OAUTH, UpstreamKind.CLAUDE_KEY):
        headers.setdefault("anthropic-version", DEFAULT_ANTHROPIC_VERSION)


def _apply_account_headers(request: http.Request, account: Account) -> None:
    """Add the account's configured headers; `$Name` copies the client's `Name` header."""
    for name, value in account.headers.items():
        if value.startswith("$"):
            copied = request.headers.get(value[1:])
            if copied is None:
                request.headers.pop(name, None)
            else:
                request.headers[name] = copied
        else:
            request.headers[name] = value


def _wrap_code_assist_body(
    request: http.Request, account: Account, model: str, body: dict[str, Any] | None
) -> None:
    """Wrap a plain Gemini request as the Code Assist endpoint expects it."""
    inner = dict(body) if body is not None else {}
    if request.path.endswith(":countTokens"):
        wrapped = wrap_count_tokens(inner, model)
    else:
        wrapped = wrap_request(inner, model, account.project_id)
    if "content-encoding" in request.headers:
        del request.headers["content-encoding"]
    request.content = wrapped
