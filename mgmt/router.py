"""Request and response types of the management API and the router that dispatches them.

Handlers are plain functions `handler(request) -> MgmtResponse`. They never see mitmproxy
objects, so tests drive them directly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

logger = logging.getLogger(__name__)

PREFIX = "/v0/management"

# HTTP methods that change state. A cross-site browser request with one of them is rejected.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class HttpError(Exception):
    """An error a handler raises to return `{"error": error}` with `status`.

    `extra` adds keys next to `error` (for example `message`), as some reference routes do.
    """

    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.extra = extra


@dataclass(frozen=True)
class MgmtRequest:
    """A management request with the `/v0/management` prefix removed from `path`.

    `headers` keys are lower-case. `query` maps each parameter to all of its values in order.
    `peer_ip` is the socket peer address, never a forwarded-for header.
    """

    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    peer_ip: str = "127.0.0.1"

    @classmethod
    def build(
        cls,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        peer_ip: str = "127.0.0.1",
    ) -> MgmtRequest:
        """Build a request from a raw path that may carry the prefix and a query string."""
        raw_path, _, raw_query = path.partition("?")
        if raw_path.startswith(PREFIX):
            raw_path = raw_path[len(PREFIX) :]
        return cls(
            method=method.upper(),
            path=raw_path or "/",
            query=parse_qs(raw_query, keep_blank_values=True),
            headers={k.lower(): v for k, v in (headers or {}).items()},
            body=body,
            peer_ip=peer_ip,
        )

    def query_value(self, name: str) -> str | None:
        """Return the first value of query parameter `name`, or None when absent."""
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        """Decode the body as JSON, raising HttpError(400, "invalid body") when it is not."""
        try:
            return json.loads(self.body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise HttpError(400, "invalid body") from None

    def json_object(self) -> dict[str, Any]:
        """Decode the body as a JSON object, raising HttpError(400, "invalid body") otherwise."""
        value = self.json()
        if not isinstance(value, dict):
            raise HttpError(400, "invalid body")
        return value


@dataclass
class MgmtResponse:
    """A response: `json` is serialised unless `body` (raw bytes) is given."""

    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def content(self) -> bytes:
        """Return the body bytes, serialising `json` when no raw body is set."""
        if self.body is not None:
            return self.body
        return json.dumps(self.json, ensure_ascii=False).encode()

    def all_headers(self) -> dict[str, str]:
        """Return the headers to send, with a JSON content type when the body is JSON."""
        headers = dict(self.headers)
        if self.body is None:
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        headers.setdefault("Cache-Control", "no-store")
        return headers


def ok(**extra: Any) -> MgmtResponse:
    """Return CLIProxyAPI's success response `{"status": "ok", ...}`."""
    return MgmtResponse(200, {"status": "ok", **extra})


def error(status: int, text: str, **extra: Any) -> MgmtResponse:
    """Return `{"error": text, ...}` with `status`."""
    return MgmtResponse(status, {"error": text, **extra})


Handler = Callable[[MgmtRequest], MgmtResponse]


class Router:
    """Maps (method, path) to a handler; paths are relative to `/v0/management`."""

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Handler]] = {}
        self._prefix_routes: list[tuple[str, str, Handler]] = []

    def add(self, methods: str | tuple[str, ...], path: str, handler: Handler) -> None:
        """Register `handler` for each method in `methods` on `path`."""
        if isinstance(methods, str):
            methods = (methods,)
        by_method = self._routes.setdefault(path, {})
        for method in methods:
            if method in by_method:
                raise ValueError(f"route {method} {path} is registered twice")
            by_method[method] = handler

    def add_prefix(self, method: str, prefix: str, handler: Handler) -> None:
        """Register `handler` for `method` on every path below `prefix` (ending in "/")."""
        if not prefix.endswith("/"):
            raise ValueError(f"route prefix {prefix!r} must end with '/'")
        self._prefix_routes.append((method, prefix, handler))

    def _match(self, request: MgmtRequest) -> tuple[Handler | None, list[str]]:
        """Return the handler for `request` (None if none) and the methods the path allows."""
        by_method = self._routes.get(request.path)
        if by_method is not None:
            return by_method.get(request.method), sorted(by_method)
        methods = []
        for method, prefix, handler in self._prefix_routes:
            if request.path.startswith(prefix) and len(request.path) > len(prefix):
                if method == request.method:
                    return handler, [method]
                methods.append(method)
        return None, sorted(methods)

    def dispatch(self, request: MgmtRequest) -> MgmtResponse:
        """Run the handler for `request`, turning HttpError into its JSON error response.

        An unknown path returns 404 `{"error": "not found"}` and a known path with another
        method returns 405. Unexpected exceptions are logged and become a 500.
        """
        handler, methods = self._match(request)
        if handler is None and not methods:
            return error(404, "not found")
        if handler is None:
            response = error(405, "method not allowed")
            response.headers["Allow"] = ", ".join(methods)
            return response
        try:
            return handler(request)
        except HttpError as exc:
            return error(exc.status, exc.error, **exc.extra)
        except Exception:
            logger.exception("management handler failed: %s %s", request.method, request.path)
            return error(500, "internal error")
