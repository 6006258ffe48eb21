"""`/api-keys`: the proxy keys clients send on `/v1` routes.

Each edit runs inside one serialised config-file update that re-reads the file, so parallel
edits never lose each other's keys. A value that is also a valid management key is rejected,
because a proxy key must never open management routes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mgmt.context import MgmtContext
from mgmt.router import HttpError, MgmtRequest, MgmtResponse, Router, ok
from mgmt.settings import save_config
from mgmt.yamledit import replace_sequence

logger = logging.getLogger(__name__)

# Upper bound on one key's length; CLIProxyAPI keys are under 100 characters.
MAX_KEY_LENGTH = 512


def _current_keys(document: Any) -> list[str]:
    keys = document.get("api-keys")
    if not isinstance(keys, list):
        return []
    return [str(key) for key in keys]


def is_valid_proxy_key(key: str) -> bool:
    """Return True when `key` can be a proxy key: 1 to 512 characters, no whitespace."""
    return bool(key) and len(key) <= MAX_KEY_LENGTH and not any(ch.isspace() for ch in key)


def _clean_key(ctx: MgmtContext, value: Any) -> str:
    if not isinstance(value, str):
        raise HttpError(400, "invalid body")
    key = value.strip()
    if not is_valid_proxy_key(key):
        raise HttpError(400, "invalid api key: use 1 to 512 characters without spaces")
    if ctx.keys.verify(key):
        raise HttpError(400, "a proxy API key must differ from the management key")
    return key


def _edit(
    ctx: MgmtContext, change: Callable[[list[str]], list[str]], what: str
) -> MgmtResponse:
    """Apply `change` (old list -> new list) inside one serialised config update."""

    def mutate(document: Any) -> None:
        old = _current_keys(document)
        new = list(dict.fromkeys(change(old)))
        if new != old:
            replace_sequence(document, "api-keys", new)

    save_config(ctx, mutate)
    logger.info("management API: %s", what)
    return ok()


def list_keys(ctx: MgmtContext, _request: MgmtRequest) -> MgmtResponse:
    return MgmtResponse(200, {"api-keys": list(ctx.config.current().api_keys)})


def put_keys(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Replace the whole list: a bare JSON array of strings, or `{"items": [...]}`."""
    body = request.json()
    if isinstance(body, dict) and "items" in body:
        body = body["items"]
    if not isinstance(body, list):
        raise HttpError(400, "invalid body")
    new = [_clean_key(ctx, item) for item in body]
    return _edit(ctx, lambda _old: new, "replaced the proxy API key list")


def patch_key(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Change one key: `{"index", "value"}` or `{"old", "new"}`.

    As in CLIProxyAPI, an index in range wins. Otherwise `old` is replaced at its first
    match, and `new` is appended when `old` is not in the list.
    """
    body = request.json_object()
    index = body.get("index")
    has_index = isinstance(index, int) and not isinstance(index, bool) and "value" in body
    has_pair = "old" in body and "new" in body
    if not has_index and not has_pair:
        raise HttpError(400, "missing fields")

    index_value = _clean_key(ctx, body["value"]) if has_index else None
    old = body.get("old")
    new_value = _clean_key(ctx, body["new"]) if has_pair else None
    if has_pair and not isinstance(old, str):
        raise HttpError(400, "invalid body")

    def change(keys: list[str]) -> list[str]:
        keys = list(keys)
        if index_value is not None and 0 <= index < len(keys):
            keys[index] = index_value
        elif new_value is not None:
            stripped = [key.strip() for key in keys]
            if old.strip() in stripped:
                keys[stripped.index(old.strip())] = new_value
            else:
                keys.append(new_value)
        else:
            raise HttpError(400, "missing fields")
        return keys

    return _edit(ctx, change, "edited a proxy API key")


def delete_key(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Remove `?index=n` (when in range) or every entry equal to `?value=`."""
    index_raw = request.query_value("index")
    value = request.query_value("value")
    index: int | None = None
    if index_raw is not None:
        try:
            index = int(index_raw)
        except ValueError:
            index = None
    if index is None and value is None:
        raise HttpError(400, "missing index or value")

    def change(keys: list[str]) -> list[str]:
        if index is not None and 0 <= index < len(keys):
            return keys[:index] + keys[index + 1 :]
        if value is not None:
            return [key for key in keys if key.strip() != value.strip()]
        raise HttpError(400, "missing index or value")

    return _edit(ctx, change, "removed a proxy API key")


def register(router: Router, ctx: MgmtContext) -> None:
    """Add the `/api-keys` routes to `router`."""
    router.add("GET", "/api-keys", lambda request: list_keys(ctx, request))
    router.add("PUT", "/api-keys", lambda request: put_keys(ctx, request))
    router.add("PATCH", "/api-keys", lambda request: patch_key(ctx, request))
    router.add("DELETE", "/api-keys", lambda request: delete_key(ctx, request))
