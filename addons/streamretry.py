"""An extension of mitmproxy's HTTP stream state machine: re-send a request to another upstream.

mitmproxy has no public way to send a request again once an upstream has responded. Doing the
upstream call from an addon, or replaying the flow, buffers the whole response, so a retried
stream would reach the client in one piece. This module replaces a few methods of mitmproxy's
internal `HttpStream` (and of its HTTP/1 server side) so that failover happens inside
mitmproxy's own data path, before any byte of the failed response reaches the client:

1. An error response (the failover addon flagged it in `responseheaders` and left it
   unstreamed) is read completely; then the `cliproxy_upstream_failure` hook runs. If the hook
   re-routed `flow.request` and set the retry flag, the failed response is dropped and the
   request is sent to the new upstream; a streamed response from there flows to the client live.
2. A connect error runs the same hook before mitmproxy gives up, so the next account is tried.
3. A streamed response's headers are held until its first body bytes, and a connection that
   breaks before then runs the hook too. After bytes went out, an error event in the client's
   dialect ends the stream instead, and the account cools down.
4. Protocol errors that still end a request (413 for an oversize body, a 502 after the last
   account, a request mitmproxy cannot parse) reach HTTP/1 clients as JSON, not as mitmproxy's
   HTML page.

The patch is bound to mitmproxy 12.3 (`check_version()` refuses anything else), and the
end-to-end failover tests fail as soon as an upgrade changes the patched behaviour.
"""

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import mitmproxy.version
from mitmproxy import http
from mitmproxy.connection import ConnectionState
from mitmproxy.net.http import http1
from mitmproxy.proxy import commands
from mitmproxy.proxy.layers.http import (
    ErrorCode,
    GetHttpConnection,
    HttpResponseHeadersHook,
    HttpStream,
    RequestData,
    RequestEndOfMessage,
    RequestHeaders,
    RequestTrailers,
    ResponseData,
    ResponseEndOfMessage,
    ResponseHeaders,
    ResponseProtocolError,
    SendHttp,
)
from mitmproxy.proxy.layers.http import _http1

from providers.dialects import Dialect, dialect_for_path, error_body

logger = logging.getLogger(__name__)

SUPPORTED_VERSION_PREFIX = "12.3."

# flow.metadata keys shared with the failover addon.
DECIDE = "cliproxy.decide"  # set in responseheaders: run the failure hook once the body is read
RETRY = "cliproxy.retry"  # set by the hook: flow.request was re-routed, send it again
FAILURE_TEXT = "cliproxy.failure"  # the connect or protocol error the hook is asked about
HANDLED = "cliproxy.handled"  # the hook already decided about this failure
STREAM_ERROR = "cliproxy.stream_error"  # callable(message) -> bytes: in-band error event
STREAM_FAILED = "cliproxy.stream_failed"  # callable(message): the upstream broke mid-stream
HEADERS_HELD = "cliproxy.headers_held"  # a streamed response's headers wait for its first bytes


@dataclass
class UpstreamFailureHook(commands.StartHook):
    """An upstream failed before anything reached the client: decide whether to retry.

    `flow.response` is the complete error response, or is None for a connect or protocol
    error (then `flow.metadata["cliproxy.failure"]` describes it). To retry, re-route
    `flow.request` and set `flow.metadata["cliproxy.retry"] = True`. To respond instead, set
    `flow.response`, or leave the upstream's error response in place.
    """

    flow: http.HTTPFlow
    name: ClassVar[str] = "cliproxy_upstream_failure"


def check_version() -> None:
    """Raise RuntimeError unless the installed mitmproxy is the version this patch targets."""
    if not mitmproxy.version.VERSION.startswith(SUPPORTED_VERSION_PREFIX):
        raise RuntimeError(
            f"cliproxy's stream retry needs mitmproxy {SUPPORTED_VERSION_PREFIX}x, "
            f"found {mitmproxy.version.VERSION}; install the version pinned in pyproject.toml"
        )


_original: dict[str, Any] = {}


def install() -> None:
    """Patch mitmproxy's HTTP stream. Calling it again does nothing."""
    if _original:
        return
    check_version()
    _original["consume"] = HttpStream.state_consume_response_body
    _original["connect"] = HttpStream.make_server_connection
    _original["protocol_error"] = HttpStream.handle_protocol_error
    _original["http1_send"] = _http1.Http1Server.send
    _original["start_stream"] = HttpStream.start_response_stream
    _original["stream_body"] = HttpStream.state_stream_response_body
    _original["error_response"] = _http1.make_error_response

    HttpStream.state_consume_response_body = _state_consume_response_body
    HttpStream.start_response_stream = _start_response_stream
    HttpStream.state_stream_response_body = _state_stream_response_body
    _http1.make_error_response = _make_json_error_response
    HttpStream.make_server_connection = _make_server_connection
    HttpStream.handle_protocol_error = _handle_protocol_error
    _http1.Http1Server.send = _http1_server_send
    logger.debug("installed the stream retry extension on mitmproxy %s", mitmproxy.version.VERSION)


def uninstall() -> None:
    """Restore mitmproxy's original methods."""
    if not _original:
        return
    HttpStream.state_consume_response_body = _original.pop("consume")
    HttpStream.make_server_connection = _original.pop("connect")
    HttpStream.handle_protocol_error = _original.pop("protocol_error")
    _http1.Http1Server.send = _original.pop("http1_send")
    HttpStream.start_response_stream = _original.pop("start_stream")
    HttpStream.state_stream_response_body = _original.pop("stream_body")
    _http1.make_error_response = _original.pop("error_response")


def _state_consume_response_body(self: HttpStream, event: Any):
    if isinstance(event, ResponseEndOfMessage) and self.flow.metadata.pop(DECIDE, False):
        assert self.flow.response
        self.flow.response.data.content = bytes(self.response_body_buf)
        self.response_body_buf.clear()

        yield UpstreamFailureHook(self.flow)
        if self.flow.metadata.pop(RETRY, False):
            yield from _resend(self)
            return
        yield from self.send_response()
        return
    yield from _original["consume"](self, event)


def _start_response_stream(self: HttpStream):
    if not _is_routed(self.flow):
        yield from _original["start_stream"](self)
        return
    # Hold the headers until the upstream sends body bytes: a stream that breaks before its
    # first byte can then still fail over, because the client has received nothing.
    self.flow.metadata[HEADERS_HELD] = True
    self.server_state = self.state_stream_response_body


def _state_stream_response_body(self: HttpStream, event: Any):
    if self.flow.metadata.pop(HEADERS_HELD, False):
        assert self.flow.response
        yield SendHttp(ResponseHeaders(self.stream_id, self.flow.response, end_stream=False), self.context.client)
    yield from _original["stream_body"](self, event)


def _make_server_connection(self: HttpStream):
    while True:
        connection, error = yield GetHttpConnection(
            (self.flow.request.host, self.flow.request.port),
            self.flow.request.scheme == "https",
            self.flow.server_conn.via,
            self.flow.server_conn.transport_protocol,
        )
        if not error:
            self.context.server = self.flow.server_conn = connection
            return True

        if _is_routed(self.flow):
            self.flow.metadata[FAILURE_TEXT] = f"connect to {self.flow.request.host} failed: {error}"
            yield UpstreamFailureHook(self.flow)
            if self.flow.metadata.pop(RETRY, False):
                continue
            self.flow.metadata[HANDLED] = True
            if self.flow.response is not None:
                yield from _send_local_response(self)
                return False

        yield from self.handle_protocol_error(
            ResponseProtocolError(self.stream_id, error, ErrorCode.CONNECT_FAILED)
        )
        return False


def _handle_protocol_error(self: HttpStream, event: Any):
    if (
        isinstance(event, ResponseProtocolError)
        and _is_routed(self.flow)
        and not self.flow.metadata.get(HANDLED)
    ):
        nothing_sent = self.server_state in (
            self.state_wait_for_response_headers,
            self.state_consume_response_body,
        ) or (
            self.server_state == self.state_stream_response_body
            and self.flow.metadata.pop(HEADERS_HELD, False)
        )
        if nothing_sent and self.client_state == self.state_done:
            self.flow.metadata[FAILURE_TEXT] = f"upstream connection failed: {event.message}"
            self.flow.metadata.pop(DECIDE, None)
            self.flow.response = None
            self.response_body_buf.clear()

            yield UpstreamFailureHook(self.flow)
            if self.flow.metadata.pop(RETRY, False):
                yield from _resend(self)
                return
            self.flow.metadata[HANDLED] = True
            if self.flow.response is not None:
                yield from _send_local_response(self)
                return
        elif self.server_state == self.state_stream_response_body:
            message = f"upstream stream ended early: {event.message}"
            stream_failed = self.flow.metadata.get(STREAM_FAILED)
            if stream_failed is not None:
                stream_failed(message)
            make_event = self.flow.metadata.get(STREAM_ERROR)
            if make_event is not None:
                yield SendHttp(ResponseData(self.stream_id, make_event(message)), self.context.client)
    yield from _original["protocol_error"](self, event)


def _resend(self: HttpStream):
    """Drop the failed response and send the (re-routed) request again."""
    self.flow.response = None
    self.server_state = self.state_wait_for_response_headers
    if not (yield from self.make_server_connection()):
        return

    request = self.flow.request
    content = request.raw_content
    done_after_headers = not (content or request.trailers)
    yield SendHttp(RequestHeaders(self.stream_id, request, done_after_headers), self.context.server)
    if content:
        yield SendHttp(RequestData(self.stream_id, content), self.context.server)
    if request.trailers:
        yield SendHttp(RequestTrailers(self.stream_id, request.trailers), self.context.server)
    yield SendHttp(RequestEndOfMessage(self.stream_id), self.context.server)


def _send_local_response(self: HttpStream):
    """Send the response an addon set in place of the upstream's response."""
    assert self.flow.response
    self.flow.response.timestamp_start = time.time()
    self.server_state = self.state_wait_for_response_headers
    yield HttpResponseHeadersHook(self.flow)
    yield from self.send_response()


def _is_routed(flow: http.HTTPFlow) -> bool:
    return "cliproxy" in flow.metadata


def _http1_server_send(self: Any, event: Any):
    if (
        isinstance(event, ResponseProtocolError)
        and not self.response
        and self.request is not None
        and (self.conn.state & ConnectionState.CAN_WRITE)
    ):
        status = event.code.http_status_code()
        if status is not None:
            yield commands.SendData(self.conn, _json_error_response(self.request.path, status, event.message))
            yield commands.CloseConnection(self.conn)
            return
    yield from _original["http1_send"](self, event)


def _json_error_response(path: str, status: int, message: str) -> bytes:
    """Build the raw HTTP/1 error response for a request whose route is known."""
    if status == 413:
        message = "request body is larger than the configured limit (config key body-size-limit-mb)"
    elif status == 502 and not message.startswith("upstream"):
        message = "upstream failed: " + message
    return _assemble_error(dialect_for_path(path.split("?", 1)[0]), status, message)


def _make_json_error_response(status_code: int, message: str = "") -> bytes:
    """Replace mitmproxy's HTML error page for requests it could not even parse.

    No route is known for such a request, so the error uses the OpenAI shape.
    """
    if "validate_inbound_headers" in message:
        message = "invalid request headers: conflicting or malformed Content-Length/Transfer-Encoding"
    return _assemble_error(Dialect.OPENAI_CHAT, status_code, message or "invalid request")


def _assemble_error(dialect: Dialect, status: int, message: str) -> bytes:
    response = http.Response.make(
        status,
        error_body(dialect, status, message),
        {"content-type": "application/json", "connection": "close"},
    )
    return http1.assemble_response(response)
