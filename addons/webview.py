"""cliproxy under mitmweb (or the mitmproxy console): readable, secret-free, bounded flows.

Masters with a flow view keep every flow in memory and show it. This addon, which the chain
adds only under such a master, does four things there:

- A streamed response is not stored by mitmproxy, so its body would show as empty. A copy of
  each streamed body, up to `STREAM_COPY_MAX_BYTES`, becomes the flow's response body when the
  stream ends. A longer body is cut, and the flow's comment notes the cut. Nothing is copied when
  mitmproxy's own `store_streamed_bodies` option is on.
- The credentials cliproxy sent upstream, and any credential header or query parameter the
  client sent, are masked on the flow once the request went out. The upstream still received
  the real values.
- cliproxy responds to management API calls and `GET /metrics` itself. Their credentials and
  request bodies are masked once the response is set. Their response bodies are replaced only
  after mitmproxy has sent them, because mitmproxy sends `flow.response` after the `response`
  hook returns. A management response body becomes a short notice, and the metrics text
  passes through the redactor. Then the view is updated.
- Only the newest `cliproxy_web_flows` finished flows stay in the view, so memory stays flat.

NOTE: the view shows a flow as soon as its request headers arrive. Until the masking above
runs, a management API call shows the management key the client sent, and a routed request
shows the injected upstream credential while it waits for the upstream's response. While a
flow is intercepted in mitmweb, its management response is shown as sent.

`running_with_flow_view()` returns whether the current master keeps flows. mitmdump keeps none.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx, exceptions, http

from addons.flowstate import FlowState, flow_state
from addons.runtime import Runtime
from store.redact import is_secret_query_parameter, mask_secret, redact_header_value

logger = logging.getLogger(__name__)

WEB_FLOWS_OPTION = "cliproxy_web_flows"
DEFAULT_WEB_FLOWS = 1000
STREAM_COPY_MAX_BYTES = 1 << 20
METRICS_PATH = "/metrics"
# Management query parameters whose values are secrets: the proxy key that
# `DELETE /api-keys?value=` removes and the OAuth authorization code of `/oauth-callback`.
MANAGEMENT_SECRET_QUERY_PARAMETERS = frozenset({"value", "code"})
# Seconds between checks whether a local response has been sent. The wait doubles up to the
# maximum, which only an intercepted flow reaches.
SEND_CHECK_FIRST_SECONDS = 0.01
SEND_CHECK_MAX_SECONDS = 1.0
# flow.metadata key set once a local response is hidden, so an `error` hook after the
# `response` hook does not replace the notice again.
RESPONSE_HIDDEN_KEY = "cliproxy.web_response_hidden"


def running_with_flow_view() -> bool:
    """Return True under a master that keeps flows in a view (mitmweb, mitmproxy console)."""
    master = getattr(ctx, "master", None)
    return master is not None and getattr(master, "view", None) is not None


def hide_credentials(request: http.Request, redact_known: Callable[[str], str]) -> None:
    """Mask credential headers and query parameters, and every known secret in header values."""
    hide_header_credentials(request.headers, redact_known)
    query = request.query
    secret_names = [name for name in query.keys() if is_secret_query_parameter(name)]
    for name in secret_names:
        query.set_all(name, [mask_secret(value) for value in query.get_all(name)])


def hide_header_credentials(headers: http.Headers, redact_known: Callable[[str], str]) -> None:
    """Mask credential header values, and every known secret in any header value."""
    for name in list(headers.keys()):
        values = headers.get_all(name)
        masked = [redact_known(redact_header_value(name, value)) for value in values]
        if masked != values:
            headers.set_all(name, masked)


def hidden_body_notice(kind: str, size: int) -> bytes:
    return (
        f"[cliproxy: the {kind} body ({size} bytes) is hidden in the flow view because it can "
        "contain secrets]"
    ).encode()


def is_metrics_request(request: http.Request) -> bool:
    return request.path.split("?", 1)[0] == METRICS_PATH


class WebView:
    """Shows finished streamed bodies, masks credentials and bounds the number of kept flows."""

    def __init__(self, runtime: Runtime, failover: Any) -> None:
        self.runtime = runtime
        self.max_flows = DEFAULT_WEB_FLOWS
        self.finished: deque[http.HTTPFlow] = deque()
        failover.stream_observers.append(self.stream_copy)

    def load(self, loader: Any) -> None:
        loader.add_option(
            WEB_FLOWS_OPTION,
            int,
            DEFAULT_WEB_FLOWS,
            "Finished flows that mitmweb keeps; older ones are removed from the view.",
        )

    def configure(self, updated: set[str]) -> None:
        if WEB_FLOWS_OPTION in updated:
            value = getattr(ctx.options, WEB_FLOWS_OPTION)
            if value < 1:
                raise exceptions.OptionsError(f"{WEB_FLOWS_OPTION} is {value}: use 1 or more")
            self.max_flows = value
            self._evict()

    def stream_copy(self, state: FlowState, flow: http.HTTPFlow) -> Callable[[bytes], None] | None:
        """Return a callback that keeps the first `STREAM_COPY_MAX_BYTES` of a streamed body."""
        if ctx.options.store_streamed_bodies:
            return None
        copy = bytearray()
        state.stream_copy = copy

        def observe(chunk: bytes) -> None:
            room = STREAM_COPY_MAX_BYTES - len(copy)
            if room > 0:
                copy.extend(chunk if len(chunk) <= room else chunk[:room])

        return observe

    def request(self, flow: http.HTTPFlow) -> None:
        state = flow_state(flow)
        if state is None:
            # The key gate creates no state for management calls and /metrics, and the
            # addons before this one have already responded to them.
            self._hide_local_request(flow)
        elif state.local:
            # cliproxy responded itself, so the request never goes upstream.
            hide_credentials(flow.request, self.runtime.redactor.redact_known)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # The request went out. A retry restores the client's request from FlowState and
        # sets the credentials again, so masking the flow's copy here is safe.
        hide_credentials(flow.request, self.runtime.redactor.redact_known)

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)
        if flow_state(flow) is None:
            # mitmproxy sends the response after this hook, so hide its body afterwards.
            asyncio.get_running_loop().call_soon(
                self._hide_sent_response, flow, SEND_CHECK_FIRST_SECONDS
            )

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)
        if flow_state(flow) is None:
            # Nothing more is sent for a failed flow.
            self._hide_local_response(flow)

    def _hide_local_request(self, flow: http.HTTPFlow) -> None:
        """Mask a management or /metrics request that cliproxy responded to itself."""
        request = flow.request
        redact_known = self.runtime.redactor.redact_known
        hide_credentials(request, redact_known)
        query = request.query
        for name in list(query.keys()):
            values = query.get_all(name)
            if name.lower() in MANAGEMENT_SECRET_QUERY_PARAMETERS:
                masked = [mask_secret(value) for value in values]
            else:
                masked = [redact_known(value) for value in values]
            if masked != values:
                query.set_all(name, masked)
        # Without a response the request would go upstream, so its body must stay intact.
        if flow.response is not None and request.raw_content:
            request.headers.pop("content-encoding", None)
            request.content = hidden_body_notice("request", len(request.raw_content))

    def _hide_sent_response(self, flow: http.HTTPFlow, wait: float) -> None:
        """Hide a local response once mitmproxy sent it, which ends the flow's `live` state."""
        if flow.live:
            if self._view_has(flow):
                asyncio.get_running_loop().call_later(
                    wait, self._hide_sent_response, flow, min(2 * wait, SEND_CHECK_MAX_SECONDS)
                )
            return
        self._hide_local_response(flow)

    def _hide_local_response(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or flow.metadata.get(RESPONSE_HIDDEN_KEY):
            return
        flow.metadata[RESPONSE_HIDDEN_KEY] = True
        redactor = self.runtime.redactor
        hide_header_credentials(response.headers, redactor.redact_known)
        body = response.get_content(strict=False) or b""
        response.headers.pop("content-encoding", None)
        if is_metrics_request(flow.request):
            # The exposition has no secrets by design, so the known-secret pass is a safeguard.
            response.content = redactor.redact_known_bytes(body)
        elif body:
            response.content = hidden_body_notice("management API response", len(body))
        view = _view()
        if view is not None:
            view.update([flow])

    def _view_has(self, flow: http.HTTPFlow) -> bool:
        view = _view()
        return view is not None and view.get_by_id(flow.id) is not None

    def _finish(self, flow: http.HTTPFlow) -> None:
        hide_credentials(flow.request, self.runtime.redactor.redact_known)
        state = flow_state(flow)
        if state is not None:
            copy = state.stream_copy
            if copy is not None and flow.response is not None:
                flow.response.raw_content = bytes(copy)
                if len(copy) >= STREAM_COPY_MAX_BYTES:
                    flow.comment = (
                        f"cliproxy: streamed body cut to its first {STREAM_COPY_MAX_BYTES} bytes"
                    )
            # The view keeps the flow, so drop what only the request path needed.
            state.stream_copy = None
            state.usage_observer = None
            state.body = None
            state.original_headers = None
            state.original_content = None
            state.request_log = None
        self.finished.append(flow)
        self._evict()

    def _evict(self) -> None:
        view = _view()
        while len(self.finished) > self.max_flows:
            oldest = self.finished.popleft()
            if view is not None:
                view.remove([oldest])


def _view() -> Any:
    return getattr(getattr(ctx, "master", None), "view", None)
