"""The key gate: the first addon every request meets.

It responds to the open routes itself (`HEAD /`, `GET /`, `/healthz`, CORS preflights), leaves
`/v0/management/*` to the management addon, and lets every other request through only with a
proxy key from `Authorization: Bearer`, `x-api-key`, `x-goog-api-key` or `?key=`. A request may
carry several credentials (a client can send its own unrelated `Authorization`); one matching
proxy key is enough. All of them are removed before the request can go upstream. Rejections are
401s in the route's error dialect, and such a request never reaches an upstream.
"""

import logging

from mitmproxy import http

from addons.flowstate import METADATA_KEY, FlowState
from addons.local import error_response, json_response
from addons.runtime import Runtime
from providers.dialects import dialect_for_path, match_route
from providers.upstreams import strip_client_credentials

logger = logging.getLogger(__name__)

MANAGEMENT_PREFIX = "/v0/management"
CORS_HEADERS = {
    "access-control-allow-origin": "*",
    "access-control-allow-methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
    "access-control-allow-headers": "*",
    "access-control-max-age": "600",
}


_KEY_HEADERS = (b"authorization", b"x-api-key", b"x-goog-api-key")


def presented_keys(request: http.Request) -> list[tuple[str, str]]:
    """Return every credential the client sent as (where, key), in the order they are checked."""
    # One pass over the raw header fields: this runs on every request.
    found: dict[bytes, str] = {}
    for name, value in request.headers.fields:
        name = name.lower()
        if name in _KEY_HEADERS and name not in found:
            found[name] = value.decode("utf-8", "surrogateescape").strip()

    keys = []
    authorization = found.get(b"authorization", "")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        keys.append(("authorization", value.strip() if scheme.lower() == "bearer" and value else authorization))
    for header in (b"x-api-key", b"x-goog-api-key"):
        value = found.get(header, "")
        if value:
            keys.append((header.decode(), value))
    if b"key=" in request.data.path:
        query_key = request.query.get("key", "").strip()
        if query_key:
            keys.append(("query", query_key))
    return keys


class KeyGate:
    """Responds to open routes, rejects requests without a proxy key, and strips client credentials."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        path = request.path.split("?", 1)[0]
        if path.startswith(MANAGEMENT_PREFIX) or path == "/metrics":
            return

        route = match_route(request.method, path)
        state = FlowState.new(route.dialect if route else dialect_for_path(path), route)
        flow.metadata[METADATA_KEY] = state

        open_response = self._open_route(request, path)
        if open_response is not None:
            state.local = True
            flow.response = open_response
            return

        keys = presented_keys(request)
        label = None
        for source, key in keys:
            label = self.runtime.proxy_keys.match(key)
            if label is not None:
                state.key_source = source
                break
        strip_client_credentials(request)

        if label is None:
            state.local = True
            state.outcome = "rejected"
            flow.response = error_response(state.dialect, 401, self._rejection(keys), code="invalid_api_key")
            return
        state.key_label = label

        limit = self.runtime.cfg.body_size_limit
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            state.local = True
            state.outcome = "rejected"
            flow.response = error_response(
                state.dialect,
                413,
                f"request body of {int(length)} bytes is larger than the limit of {limit} bytes "
                "(config key body-size-limit-mb)",
                code="request_too_large",
            )
            flow.response.headers["connection"] = "close"

    def _open_route(self, request: http.Request, path: str) -> http.Response | None:
        method = request.method
        if method == "OPTIONS" and "access-control-request-method" in request.headers:
            return http.Response.make(204, b"", CORS_HEADERS)
        if path == "/" and method in ("GET", "HEAD"):
            return json_response(200, {"name": "cliproxy", "status": "ok"})
        if path == "/healthz" and method in ("GET", "HEAD"):
            return json_response(200, {"status": "ok"})
        return None

    def _rejection(self, keys: list[tuple[str, str]]) -> str:
        if not len(self.runtime.proxy_keys):
            return (
                "cliproxy has no proxy keys configured; add one under api-keys in "
                f"{self.runtime.cfg.path} (or run `cliproxy keys add`)"
            )
        if not keys:
            return (
                "missing proxy key: send it as 'Authorization: Bearer <key>', 'x-api-key', "
                "'x-goog-api-key' or '?key='"
            )
        return "invalid proxy key: it is not one of the api-keys in cliproxy's config"
