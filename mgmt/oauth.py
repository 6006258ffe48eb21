"""OAuth login routes: `/<provider>-auth-url`, `/get-auth-status`, `/oauth-callback`,
`/oauth-session`, backed by `oauth.flow.LoginRegistry`.

Responses use CLIProxyAPI's login shapes: `{"status": "ok", "url", "state"}` to start,
`{"status": "wait" | "ok" | "error", "error"?}` to poll, and `{"status": "error", "error"}`
for failures, which Quotio reads from the `status` key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mgmt.context import MgmtContext
from mgmt.router import MgmtRequest, MgmtResponse, Router
from oauth.errors import (
    InvalidCallback,
    InvalidConfig,
    InvalidState,
    LoginNotPending,
    OAuthError,
    StateExpired,
    StateMismatch,
    StateNotFound,
)

logger = logging.getLogger(__name__)

# Start routes and the provider each one logs in to.
LOGIN_ROUTES = {
    "/anthropic-auth-url": "claude",
    "/claude-auth-url": "claude",
    "/codex-auth-url": "codex",
    "/gemini-cli-auth-url": "gemini",
}
# Providers whose login CLIProxyAPI or its forks offer and cliproxy does not.
UNSUPPORTED_LOGIN_ROUTES = {
    "/antigravity-auth-url": "antigravity",
    "/qwen-auth-url": "qwen",
    "/iflow-auth-url": "iflow",
    "/kimi-auth-url": "kimi",
    "/xai-auth-url": "xai",
}

_ERROR_STATUS: dict[type[OAuthError], int] = {
    InvalidState: 400,
    InvalidCallback: 400,
    StateMismatch: 400,
    InvalidConfig: 400,
    StateNotFound: 404,
    StateExpired: 404,
    LoginNotPending: 409,
}


def _failure(status: int, message: str) -> MgmtResponse:
    return MgmtResponse(status, {"status": "error", "error": message})


def _oauth_failure(exc: OAuthError) -> MgmtResponse:
    for error_type, status in _ERROR_STATUS.items():
        if isinstance(exc, error_type):
            return _failure(status, str(exc))
    logger.warning("management API: OAuth request failed: %s", exc)
    return _failure(500, str(exc))


def _with_registry(
    ctx: MgmtContext, handle: Callable[[Any, MgmtRequest], MgmtResponse]
) -> Callable[[MgmtRequest], MgmtResponse]:
    def handler(request: MgmtRequest) -> MgmtResponse:
        registry = ctx.logins() if ctx.logins is not None else None
        if registry is None:
            return _failure(503, "OAuth logins are not available in this process")
        try:
            return handle(registry, request)
        except OAuthError as exc:
            return _oauth_failure(exc)

    return handler


def _start(ctx: MgmtContext, provider: str) -> Callable[[Any, MgmtRequest], MgmtResponse]:
    def handle(registry: Any, request: MgmtRequest) -> MgmtResponse:
        project_id = request.query_value("project_id") if provider == "gemini" else None
        result = registry.begin(provider, project_id=project_id)
        logger.info("management API: started %s login", provider)
        # Desktop apps pass is_webui=true and expect the browser redirect to complete the
        # login, so something must listen on the provider's fixed localhost callback port.
        if request.query_value("is_webui") in ("true", "1") and ctx.oauth_redirects is not None:
            ctx.oauth_redirects.expect(provider, result["state"])
        return MgmtResponse(200, dict(result))

    return handle


def _unsupported(provider: str) -> Callable[[MgmtRequest], MgmtResponse]:
    def handler(_request: MgmtRequest) -> MgmtResponse:
        return _failure(
            501,
            f"{provider} login is not supported by cliproxy; upload the account file "
            "with POST /v0/management/auth-files instead",
        )

    return handler


def _status(registry: Any, request: MgmtRequest) -> MgmtResponse:
    state = request.query_value("state")
    if not state:
        return MgmtResponse(200, {"status": "ok"})
    return MgmtResponse(200, dict(registry.status(state)))


_CALLBACK_FIELDS = ("state", "code", "error", "redirect_url", "provider")


def _callback(registry: Any, request: MgmtRequest) -> MgmtResponse:
    if request.method == "POST":
        body = request.json()
        if not isinstance(body, dict):
            return _failure(400, "invalid body")
        fields = {key: body.get(key) for key in _CALLBACK_FIELDS}
    else:
        fields = {key: request.query_value(key) for key in _CALLBACK_FIELDS}
    if any(value is not None and not isinstance(value, str) for value in fields.values()):
        return _failure(400, "invalid body")
    result = registry.callback(
        fields["state"] or None,
        fields["code"] or None,
        fields["error"] or None,
        fields["redirect_url"] or None,
        provider=fields["provider"] or None,
    )
    return MgmtResponse(200, dict(result))


def _cancel(registry: Any, request: MgmtRequest) -> MgmtResponse:
    state = request.query_value("state")
    if not state:
        return _failure(400, "missing state")
    return MgmtResponse(200, {"status": "ok", "cancelled": registry.cancel(state)})


def register(router: Router, ctx: MgmtContext) -> None:
    """Add the OAuth login routes to `router`."""
    for route, provider in LOGIN_ROUTES.items():
        router.add("GET", route, _with_registry(ctx, _start(ctx, provider)))
    for route, provider in UNSUPPORTED_LOGIN_ROUTES.items():
        router.add("GET", route, _unsupported(provider))
    router.add("GET", "/get-auth-status", _with_registry(ctx, _status))
    router.add(("GET", "POST"), "/oauth-callback", _with_registry(ctx, _callback))
    router.add("DELETE", "/oauth-session", _with_registry(ctx, _cancel))
