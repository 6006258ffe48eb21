"""Failover and streaming: what happens once an upstream starts responding.

In `responseheaders` a successful response is streamed straight through (SSE, and any response of
unknown or large size) with a tee that watches the bytes for the first-byte time and usage
without holding them. An error response is left unstreamed and flagged, so the stream extension
(`addons.streamretry`) reads it completely and calls `cliproxy_upstream_failure`: the failure is
classified, the account cools down, and the request moves to the next account, all before any
byte reached the client. Request faults (a bad request would fail anywhere) go back unchanged.
"""

import json
import logging
from collections.abc import Callable

from mitmproxy import http

from addons import streamretry
from addons.flowstate import REQUEST_ID_HEADER, Attempt, FlowState, client_gone, flow_state
from addons.local import error_response
from addons.route import NoAccount, apply_choice, choose_account
from addons.runtime import Runtime
from pool import FailureKind, Picked, UpstreamKind
from providers.geminicli import SSEUnwrapper, unwrap_response
from providers.classify import classify, connection_failure
from providers.dialects import stream_error_event

logger = logging.getLogger(__name__)

STREAM_ABOVE_BYTES = 1024 * 1024


class StreamTee:
    """The `flow.response.stream` callable: passes chunks through and observes them.

    `transform` (for example the Code Assist unwrapper) may rewrite chunks; without it every
    byte reaches the client exactly as the upstream sent it.
    """

    def __init__(
        self,
        state: FlowState,
        observers: list[Callable[[bytes], None]],
        transform: Callable[[bytes], bytes] | None = None,
        finish: Callable[[], bytes] | None = None,
    ) -> None:
        self.state = state
        self.observers = observers
        self.transform = transform
        self.finish = finish

    def __call__(self, chunk: bytes) -> bytes:
        state = self.state
        if not chunk:
            tail = self.finish() if self.finish is not None else b""
            state.bytes_out += len(tail)
            if tail:
                for observe in self.observers:
                    observe(tail)
            return tail
        if state.first_byte_perf is None:
            import time

            state.first_byte_perf = time.perf_counter()
        if self.transform is not None:
            chunk = self.transform(chunk)
        state.bytes_out += len(chunk)
        for observe in self.observers:
            observe(chunk)
        return chunk


def should_stream(flow: http.HTTPFlow, state: FlowState) -> bool:
    response = flow.response
    assert response is not None
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return True
    length = response.headers.get("content-length")
    if length is None:
        return state.stream or "chunked" in response.headers.get("transfer-encoding", "")
    return length.isdigit() and int(length) > STREAM_ABOVE_BYTES


class Failover:
    """Streams successful responses and turns failed ones into retries on other accounts."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.stream_observers: list[Callable[[FlowState, http.HTTPFlow], Callable[[bytes], None] | None]] = []

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = flow_state(flow)
        if state is None:
            return
        response = flow.response
        assert response is not None
        response.headers[REQUEST_ID_HEADER] = state.request_id
        if state.local or state.final or state.account is None:
            return

        if response.status_code >= 400:
            flow.metadata[streamretry.DECIDE] = True
            return

        self.runtime.pool.mark_success(state.account, state.upstream_model)
        state.attempts.append(Attempt(state.account.label, response.status_code))
        if state.collect_stream:
            return  # buffered, then turned into one JSON response in `response`
        if should_stream(flow, state):
            observers = []
            for make in self.stream_observers:
                observer = make(state, flow)
                if observer is not None:
                    observers.append(observer)
            if state.account.kind is UpstreamKind.GEMINI_CLI:
                unwrapper = SSEUnwrapper()
                response.stream = StreamTee(state, observers, unwrapper.feed, unwrapper.finish)
            else:
                response.stream = StreamTee(state, observers)
            flow.metadata[streamretry.STREAM_ERROR] = lambda message: stream_error_event(
                state.dialect, message
            )
            flow.metadata[streamretry.STREAM_FAILED] = lambda message: self.stream_failed(state, message)

    def stream_failed(self, state: FlowState, message: str) -> None:
        """Cool an account whose stream broke after the client got the first bytes."""
        account = state.account
        if account is None:
            return
        failure = connection_failure(message)
        cooldown = self.runtime.pool.mark_failure(account, state.upstream_model, failure)
        state.attempts.append(Attempt(account.label, 0, cooldown, message))
        logger.info(
            "request %s: account %s broke off its stream (%s), cooling %.0fs",
            state.request_id, account.label, message, cooldown,
        )

    async def cliproxy_upstream_failure(self, flow: http.HTTPFlow) -> None:
        state = flow_state(flow)
        if state is None or state.account is None or state.route is None:
            return
        account = state.account
        response = flow.response

        if response is not None:
            body = response.get_content(strict=False) or b""
            failure = classify(response.status_code, response.headers, body)
        else:
            failure = connection_failure(flow.metadata.get(streamretry.FAILURE_TEXT, "upstream failed"))

        if failure.kind is FailureKind.REQUEST_FAULT:
            state.attempts.append(Attempt(account.label, failure.status, 0.0, failure.reason))
            logger.info(
                "request %s: account %s rejected the request (%s); not retrying",
                state.request_id, account.label, failure.reason,
            )
            return

        if (
            failure.kind is FailureKind.UNAUTHORIZED
            and account.is_oauth
            and account.id not in state.refreshed
        ):
            state.refreshed.add(account.id)
            if await self.runtime.tokens.refresh_after_401(account):
                state.attempts.append(Attempt(account.label, 401, 0.0, "access token refreshed"))
                logger.info(
                    "request %s: account %s returned 401; refreshed its token, retrying once",
                    state.request_id, account.label,
                )
                problem = apply_choice(flow, state, Picked(account, state.upstream_model))
                if problem is None:
                    flow.metadata[streamretry.RETRY] = True
                    return

        cooldown = self.runtime.pool.mark_failure(account, state.upstream_model, failure)
        state.attempts.append(Attempt(account.label, failure.status, cooldown, failure.reason))
        logger.info(
            "failover: request %s: account %s failed (%s), cooling %.0fs",
            state.request_id, account.label, failure.reason, cooldown,
        )

        choice = await choose_account(self.runtime, state, failure, client_gone(flow))
        if isinstance(choice, NoAccount):
            logger.info(
                "request %s: no account left for %s after %d attempts",
                state.request_id, state.requested_model, len(state.attempts),
            )
            keep_upstream_error = (
                response is not None
                and failure.kind is not FailureKind.RATE_LIMITED
                and choice.response.status_code != 429
            )
            if not keep_upstream_error:
                choice.response.headers[REQUEST_ID_HEADER] = state.request_id
                flow.response = choice.response
            state.final = True
            return

        logger.info("request %s: retrying on account %s", state.request_id, choice.account.label)
        problem = apply_choice(flow, state, choice)
        if problem is not None:
            flow.response = problem
            state.final = True
            return
        flow.metadata[streamretry.RETRY] = True

    def response(self, flow: http.HTTPFlow) -> None:
        state = flow_state(flow)
        if state is None or state.final or state.account is None:
            return
        if state.account.kind is UpstreamKind.GEMINI_CLI and flow.response is not None:
            if flow.response.stream is False and flow.response.status_code < 400:
                flow.response.content = unwrap_response(flow.response.get_content(strict=False) or b"")
            return
        if not state.collect_stream:
            return
        response = flow.response
        assert response is not None
        if response.status_code >= 400:
            return
        completed = completed_response(response.get_content(strict=False) or b"")
        if completed is None:
            logger.warning(
                "request %s: account %s ended its stream without response.completed",
                state.request_id, state.account.label if state.account else "?",
            )
            flow.response = error_response(
                state.dialect, 502, "upstream stream ended without response.completed", code="upstream_error"
            )
            return
        response.headers["content-type"] = "application/json"
        response.headers.pop("content-encoding", None)
        response.content = json.dumps(completed).encode("utf-8")


def completed_response(stream: bytes) -> dict | None:
    """Return the `response` object of a Responses stream's `response.completed` event."""
    for block in stream.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"".join(
            line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")
        )
        if b'"response.completed"' not in data:
            continue
        try:
            event = json.loads(data)
        except ValueError:
            continue
        if event.get("type") == "response.completed" and isinstance(event.get("response"), dict):
            return event["response"]
    return None
