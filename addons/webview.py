"""cliproxy under mitmweb (or the mitmproxy console): readable, secret-free, bounded flows.

Masters with a flow view keep every flow in memory and show it. This addon, which the chain
adds only under such a master, does three things there:

- A streamed response is not stored by mitmproxy, so its body would show as empty. A copy of
  each streamed body, up to `STREAM_COPY_MAX_BYTES`, becomes the flow's response body when the
  stream ends. A longer body is cut, and the flow's comment notes the cut. Nothing is copied when
  mitmproxy's own `store_streamed_bodies` option is on.
- The credentials cliproxy sent upstream, and any credential header or query parameter the
  client sent, are masked on the flow once the request went out. The upstream still received
  the real values.
- Only the newest `cliproxy_web_flows` finished flows stay in the view, so memory stays flat.

NOTE: the view shows a flow as soon as it starts. Until the masking above runs, a
management API call shows the management key the client sent, and a routed request shows the
injected upstream credential while it waits for the upstream's response.

`running_with_flow_view()` returns whether the current master keeps flows. mitmdump keeps none.
"""

from __future__ import annotations

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


def running_with_flow_view() -> bool:
    """Return True under a master that keeps flows in a view (mitmweb, mitmproxy console)."""
    master = getattr(ctx, "master", None)
    return master is not None and getattr(master, "view", None) is not None


def hide_credentials(request: http.Request, redact_known: Callable[[str], str]) -> None:
    """Mask credential headers and query parameters, and every known secret in header values."""
    headers = request.headers
    for name in list(headers.keys()):
        values = headers.get_all(name)
        masked = [redact_known(redact_header_value(name, value)) for value in values]
        if masked != values:
            headers.set_all(name, masked)
    query = request.query
    secret_names = [name for name in query.keys() if is_secret_query_parameter(name)]
    for name in secret_names:
        query.set_all(name, [mask_secret(value) for value in query.get_all(name)])


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
        if state is None or state.local:
            # Management and /metrics requests were already handled by the addons before
            # this one, and requests that cliproxy responded to itself never go upstream.
            hide_credentials(flow.request, self.runtime.redactor.redact_known)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # The request went out. A retry restores the client's request from FlowState and
        # sets the credentials again, so masking the flow's copy here is safe.
        hide_credentials(flow.request, self.runtime.redactor.redact_known)

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

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
        view = getattr(getattr(ctx, "master", None), "view", None)
        while len(self.finished) > self.max_flows:
            oldest = self.finished.popleft()
            if view is not None:
                view.remove([oldest])
