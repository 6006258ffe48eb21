"""Request log files for the tap (addons/tap.py), written off the event loop.

`RequestLogger` turns a flow into calls of `store.request_log.RequestLogWriter` and runs them
on one background thread, in the order they were submitted. The event loop only copies what
it needs (header tuples, body references) and queues the write.

- Full mode (`request-log: true`): the file opens when the request hook ran. A streamed response's
  headers are written when the stream starts, and its chunks as they arrive.
- Error-only mode: nothing happens while the request runs. A failed request is written whole
  when it ends, from the flow. The body of a streamed response is not kept in this mode, and
  the file notes that.

A request that cliproxy rejected (no valid proxy key, or a body over `body-size-limit-mb`) is
logged without its request body, in a file cut at `REJECTED_LOG_MAX_BYTES`. A request without
a valid proxy key gets no `error-*.log` file, so clients without a key can neither fill the
disk nor push real failures out of the kept error files. The usage store and the metrics
still count every rejection.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from mitmproxy import http
from mitmproxy.net import encoding

from addons import flowstate
from addons.flowstate import FlowState
from addons.runtime import Runtime
from pool import Account
from store.records import RequestRecord
from store.request_log import RequestLogHandle, RequestLogWriter

logger = logging.getLogger(__name__)

STREAMED_BODY_NOT_KEPT = b"[streamed response body not kept: request-log is off]"
REJECTED_LOG_MAX_BYTES = 16 * 1024
REJECTED = "rejected"  # `FlowState.outcome` of a request that the key gate rejected


def is_rejected(state: FlowState) -> bool:
    return state.outcome == REJECTED


def rejected_body_notice(size: int) -> bytes:
    return f"[request body of {size} bytes not logged: cliproxy rejected the request]".encode()


class RequestSnapshot(NamedTuple):
    """The client's request as the request log shows it."""

    method: str
    url: str
    fields: tuple[tuple[bytes, bytes], ...]
    body: bytes
    content_encoding: str
    http_version: str

    @classmethod
    def of(cls, flow: http.HTTPFlow, state: FlowState) -> RequestSnapshot:
        """Take the client's request. Routed requests use the copy from before the router
        rewrote them for the upstream, so the upstream credentials are never in it. A
        rejected request's body is replaced by a notice with its size."""
        request = flow.request
        if state.original_headers is not None:
            fields, url, body = state.original_headers, state.original_path, state.original_content
        else:
            fields, url, body = request.headers.fields, request.path, request.raw_content
        body = body or b""
        content_encoding = _first_value(fields, b"content-encoding")
        if is_rejected(state):
            body, content_encoding = rejected_body_notice(len(body)), ""
        return cls(request.method, url, fields, body, content_encoding, request.http_version)


class ResponseSnapshot(NamedTuple):
    """A response as the request log shows it. `body` is None when the response was streamed."""

    status: int
    fields: tuple[tuple[bytes, bytes], ...]
    body: bytes | None
    content_encoding: str

    @classmethod
    def of(cls, response: http.Response, streamed: bool) -> ResponseSnapshot:
        body = None if streamed else (response.raw_content or b"")
        return cls(
            response.status_code, response.headers.fields, body,
            response.headers.get("content-encoding", ""),
        )


class LogWorker:
    """One background thread that runs request log writes in the order they were submitted.

    `submit` never blocks. When `max_pending` writes are already waiting (a very slow disk),
    the write is dropped and counted in `dropped`, and that request's log misses a part.
    """

    def __init__(self, max_pending: int = 10_000) -> None:
        self.dropped = 0
        self._queue: queue.Queue[tuple[Callable[..., None], tuple[Any, ...]] | None] = queue.Queue(
            max_pending
        )
        self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
        self._thread.start()

    def submit(self, function: Callable[..., None], *arguments: Any) -> None:
        try:
            self._queue.put_nowait((function, arguments))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.error(
                    "request log: %d writes dropped because the disk is too slow", self.dropped
                )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every write submitted before this call ran; False after `timeout` seconds."""
        done = threading.Event()
        try:
            self._queue.put((done.set, ()), timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Run the queued writes, then stop the thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            logger.error("request log: the writer did not drain its queue within %.0f s", timeout)
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            function, arguments = item
            try:
                function(*arguments)
            except Exception:  # noqa: BLE001 - one failed write must not stop the thread
                logger.exception("request log: a write failed")


class LogSession:
    """The log file of one request in progress (full mode).

    The event loop updates the counters. The worker thread sets `handle` when the file opens,
    so a session whose open was dropped writes nothing.
    """

    __slots__ = ("handle", "attempts_logged", "response_logged")

    def __init__(self) -> None:
        self.handle: RequestLogHandle | None = None
        self.attempts_logged = 0
        self.response_logged = False


class RequestLogger:
    """Writes the runtime's request log files on a background thread.

    `before_open(account)` runs on that thread before a file opens. The tap uses it to register
    tokens that a refresh replaced, so the redactor masks them too.
    """

    def __init__(self, runtime: Runtime, before_open: Callable[[Account | None], None]) -> None:
        self.runtime = runtime
        self.worker = LogWorker()
        self._before_open = before_open

    def start(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """Open the request's file in full mode; the request hook has run."""
        writer = self.runtime.request_log
        if writer is None or not writer.full:
            return
        session = LogSession()
        state.request_log = session
        self.worker.submit(
            self._open, writer, session, state.account, state.request_id, state.started,
            RequestSnapshot.of(flow, state), _max_log_bytes(state),
        )

    def stream_started(self, state: FlowState, response: http.Response) -> None:
        """Write the attempts and the response headers before the streamed body."""
        session = state.request_log
        attempts = state.attempts[session.attempts_logged :]
        session.attempts_logged = len(state.attempts)
        session.response_logged = True
        self.worker.submit(_log_response, session, attempts, ResponseSnapshot.of(response, True))

    def chunk_writer(self, session: LogSession) -> Callable[[bytes], None]:
        """Return a callback that appends a streamed chunk to the session's file."""
        submit = self.worker.submit

        def append(chunk: bytes) -> None:
            submit(_append_response, session, chunk)

        return append

    def finish(self, flow: http.HTTPFlow, state: FlowState, record: RequestRecord, streamed: bool) -> None:
        """Complete the request's log: close its file, or write a failed request's file whole."""
        response = flow.response
        error_text = str(flow.error.msg) if flow.error is not None else ""
        session = state.request_log
        if session is not None:
            attempts = state.attempts[session.attempts_logged :]
            session.attempts_logged = len(state.attempts)
            snapshot = None
            if not session.response_logged and response is not None:
                session.response_logged = True
                snapshot = ResponseSnapshot.of(response, streamed)
            if attempts or snapshot is not None:
                self.worker.submit(_log_response, session, attempts, snapshot)
            self.worker.submit(_close_log, session, record.status, record.failed, error_text)
            return

        writer = self.runtime.request_log
        if writer is None or not (writer.full or (record.failed and writer.error_files_kept > 0)):
            return
        if not writer.full and is_rejected(state) and not state.key_label:
            return
        self.worker.submit(
            self._write_whole,
            writer,
            state.account,
            state.request_id,
            state.started,
            RequestSnapshot.of(flow, state),
            list(state.attempts),
            ResponseSnapshot.of(response, streamed) if response is not None else None,
            record,
            error_text,
            _max_log_bytes(state),
        )

    def close(self) -> None:
        self.worker.close()

    def _open(
        self,
        writer: RequestLogWriter,
        session: LogSession,
        account: Account | None,
        request_id: str,
        started: float,
        request: RequestSnapshot,
        max_bytes: int | None = None,
    ) -> None:
        self._before_open(account)
        session.handle = writer.open(
            request_id,
            request.method,
            request.url,
            request.fields,
            decode_body(request.body, request.content_encoding),
            http_version=request.http_version,
            timestamp=started,
            max_bytes=max_bytes,
        )

    def _write_whole(
        self,
        writer: RequestLogWriter,
        account: Account | None,
        request_id: str,
        started: float,
        request: RequestSnapshot,
        attempts: list[flowstate.Attempt],
        response: ResponseSnapshot | None,
        record: RequestRecord,
        error_text: str,
        max_bytes: int | None,
    ) -> None:
        session = LogSession()
        self._open(writer, session, account, request_id, started, request, max_bytes)
        _log_response(session, attempts, response)
        if response is not None and response.body is None:
            _append_response(session, STREAMED_BODY_NOT_KEPT)
        _close_log(session, record.status, record.failed, error_text)


def _first_value(fields: tuple[tuple[bytes, bytes], ...], name: bytes) -> str:
    """Return the first value of header `name` (lower case) in raw header fields, or ""."""
    for field_name, value in fields:
        if field_name.lower() == name:
            return value.decode("latin-1")
    return ""


def _max_log_bytes(state: FlowState) -> int | None:
    return REJECTED_LOG_MAX_BYTES if is_rejected(state) else None


def decode_body(body: bytes, content_encoding: str) -> bytes:
    """Decode a gzip, deflate, br or zstd body; return it unchanged when that fails."""
    if not body or not content_encoding:
        return body
    try:
        return encoding.decode(body, content_encoding)
    except ValueError:
        return body


def _log_response(
    session: LogSession, attempts: list[flowstate.Attempt], response: ResponseSnapshot | None
) -> None:
    handle = session.handle
    if handle is None:
        return
    for attempt in attempts:
        handle.add_attempt(
            attempt.account,
            attempt.status,
            cooldown_seconds=attempt.cooldown_seconds or None,
            reason=attempt.reason,
        )
    if response is None:
        return
    handle.set_response(response.status, response.fields)
    if response.body:
        handle.append_response(decode_body(response.body, response.content_encoding))


def _append_response(session: LogSession, chunk: bytes) -> None:
    if session.handle is not None and chunk:
        session.handle.append_response(chunk)


def _close_log(session: LogSession, status: int, failed: bool, error_text: str) -> None:
    if session.handle is not None:
        session.handle.close(status or None, failed=failed, error=error_text)
