"""FakeUpstream: an asyncio HTTP/1.1 server on 127.0.0.1 that imitates AI provider APIs.

The server runs its event loop in a background thread, so synchronous tests can drive it:

    with FakeUpstream() as up:
        up.enqueue("A", rate_limited("retry-after-seconds", 5))
        ...  # point the proxy's account A at up.account_url("A")
        assert up.count("A") == 2

Requests whose path starts with `/acct/<name>/` belong to account `<name>`; all other
paths belong to account "". Routing, recording and failure scripting are described in
`tests.fakes.routes`, `tests.fakes.recording` and `tests.fakes.behaviors`. Paths under
`/_fake/` are the HTTP control API of `tests.fakes.control`; they are not recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from tests.fakes.behaviors import DEFAULT_PLAN, ApiError, Behavior, Scripts
from tests.fakes.control import handle_control
from tests.fakes.core import Call, dumps, json_reply
from tests.fakes.errors import render_error
from tests.fakes.http11 import MAX_HEAD_BYTES, BadRequest, RawRequest, build_head, decode_content, read_request
from tests.fakes.recording import RecordedRequest, Recorder
from tests.fakes.responder import ReplyWriter
from tests.fakes.routes import match_route

logger = logging.getLogger(__name__)

ACCOUNT_PREFIX = "/acct/"
CONTROL_PREFIX = "/_fake/"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


def split_account(path: str) -> tuple[str, str]:
    """Split `/acct/<name>/rest` into ("<name>", "/rest"); other paths belong to account ""."""
    if not path.startswith(ACCOUNT_PREFIX):
        return "", path
    name, slash, rest = path[len(ACCOUNT_PREFIX):].partition("/")
    return unquote(name), slash + rest if slash else "/"


def _decode_json(body: bytes, content_encoding: str | None) -> Any:
    if not body:
        return None
    try:
        return json.loads(decode_content(body, content_encoding))
    except ValueError:
        # Covers undecodable codings, invalid UTF-8 and invalid JSON alike.
        return None


class FakeUpstream:
    """Fake provider server with per-account recording and failure scripting.

    `max_records` bounds the stored requests (the oldest are dropped; None keeps all), so
    a long benchmark run does not grow without limit. Counts are not affected by it.
    """

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1", max_records: int | None = 10_000) -> None:
        self._host = host
        self._requested_port = port
        self._recorder = Recorder(max_records)
        self._scripts = Scripts()
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._startup_error: BaseException | None = None

    # ----- lifecycle -----

    def start(self) -> FakeUpstream:
        """Start serving in a background thread and wait until the port is bound."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstream is already started")
        ready = threading.Event()

        def run() -> None:
            try:
                asyncio.run(self.serve(on_ready=lambda _port: ready.set()))
            except BaseException as exc:  # reported to the thread that called start()
                self._startup_error = exc
                ready.set()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(_START_TIMEOUT):
            raise RuntimeError(f"fake upstream did not start within {_START_TIMEOUT} s")
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"fake upstream failed to start: {self._startup_error}") from self._startup_error
        return self

    def stop(self) -> None:
        """Close the listening socket and all connections, then end the thread."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop_event.set)
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            logger.warning("fake upstream thread did not stop within %s s", _STOP_TIMEOUT)
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def serve(self, on_ready: Callable[[int], None] | None = None) -> None:
        """Serve on the current event loop until `request_stop()` is called.

        `on_ready` is called with the bound port once the server accepts connections.
        """
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._server = await asyncio.start_server(
            self._serve_connection, self._host, self._requested_port, limit=MAX_HEAD_BYTES
        )
        self._port = self._server.sockets[0].getsockname()[1]
        logger.info("fake upstream listening on %s:%d", self._host, self._port)
        if on_ready is not None:
            on_ready(self._port)
        try:
            await self._stop_event.wait()
        finally:
            await self._close()

    def request_stop(self) -> None:
        """Make `serve()` return; safe to call from any thread."""
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)

    async def _close(self) -> None:
        server = self._server
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        try:
            await asyncio.wait_for(server.wait_closed(), _STOP_TIMEOUT)
        except TimeoutError:
            logger.warning("fake upstream connections did not close within %s s", _STOP_TIMEOUT)
        logger.info("fake upstream on port %s stopped", self._port)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeUpstream is not started; call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def account_url(self, account: str) -> str:
        """Return the base URL that routes requests to `account`."""
        return f"{self.base_url}{ACCOUNT_PREFIX}{quote(account, safe='')}"

    # ----- recordings -----

    def requests(self, account: str | None = None) -> list[RecordedRequest]:
        """Return the recorded requests in arrival order, optionally only those of `account`."""
        return self._recorder.requests(account)

    def count(self, account: str | None = None) -> int:
        """Return how many requests arrived since the last clear(), for `account` or in all."""
        return self._recorder.count(account)

    def event_times(self, seq: int) -> list[float]:
        """Return the time.monotonic() at which each stream frame of request `seq` was written and drained."""
        return self._recorder.event_times(seq)

    def clear(self) -> None:
        """Drop recorded requests and counts; scripted behaviors stay."""
        self._recorder.clear()

    # ----- failure scripting -----

    def enqueue(self, account: str, *behaviors: Behavior | list[Behavior] | tuple[Behavior, ...]) -> None:
        """Queue behaviors for `account`; each later request to it consumes one, in order."""
        self._scripts.enqueue(account, *behaviors)

    def set_default(self, account: str, behavior: Behavior | list[Behavior] | None) -> None:
        """Apply `behavior` to every request of `account` once its queue is empty; None restores success."""
        self._scripts.set_default(account, behavior)

    def pending(self, account: str) -> int:
        """Return how many queued behaviors of `account` are not consumed yet."""
        return self._scripts.pending(account)

    def reset(self) -> None:
        """Clear all scripted behaviors and all recordings."""
        self._scripts.reset()
        self._recorder.clear()

    # ----- HTTP -----

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._writers.add(writer)
        try:
            while True:
                try:
                    raw = await read_request(reader, writer)
                except BadRequest as exc:
                    logger.warning("fake upstream rejected a malformed request: %s", exc)
                    body = dumps({"error": {"message": f"Malformed HTTP request: {exc}", "type": "bad_request"}})
                    writer.write(build_head(400, [
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))),
                        ("Connection", "close"),
                    ]) + body)
                    await writer.drain()
                    break
                if raw is None or not await self._handle(raw, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            logger.exception("fake upstream connection failed")
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _handle(self, raw: RawRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Respond to one request; return whether the connection stays open."""
        target = raw.target
        if not target.startswith("/"):
            # Absolute form, as a forward proxy would send it.
            parts = urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        full_path, _, query_string = target.partition("?")
        keep_alive = raw.keep_alive

        if full_path.startswith(CONTROL_PREFIX):
            reply = handle_control(self, raw.method, full_path, query_string, raw.body)
            return await ReplyWriter(reader, writer, _scratch_record(), DEFAULT_PLAN, b"", None, keep_alive).send(reply)

        record = self._record(raw, full_path, query_string)
        if raw.method == "HEAD":
            record.status = 200
            writer.write(build_head(200, [("Content-Length", "0"), *_connection_header(keep_alive)]))
            await writer.drain()
            return keep_alive

        matched = match_route(record)
        if matched is None:
            message = f"No fake route for {raw.method} {record.path}."
            reply = json_reply(404, {"error": {"type": "not_found_error", "message": message}})
            return await ReplyWriter(reader, writer, record, DEFAULT_PLAN, b"", None, keep_alive).send(reply)

        route, path_model = matched
        plan = self._scripts.next_plan(record.account)
        model = path_model
        if model is None and isinstance(record.json, dict) and isinstance(record.json.get("model"), str):
            model = record.json["model"]

        try:
            if plan.error is not None:
                reply = render_error(plan.error, route.dialect, model)
            else:
                reply = route.handler(Call(record, route.dialect, plan, path_model))
        except Exception:
            logger.exception("fake upstream handler %s failed for %s %s", route.name, raw.method, raw.target)
            bug = ApiError("server_error", 500, message="The fake upstream failed; see its log.")
            reply = render_error(bug, route.dialect, None)
            keep_alive = False

        rid = f"{record.seq:06d}{secrets.token_hex(6)}".encode()
        return await ReplyWriter(reader, writer, record, plan, rid, model, keep_alive).send(reply)

    def _record(self, raw: RawRequest, full_path: str, query_string: str) -> RecordedRequest:
        account, path = split_account(full_path)
        return self._recorder.add(
            account=account,
            method=raw.method,
            path=path,
            raw_path=raw.target,
            query=dict(parse_qsl(query_string, keep_blank_values=True)),
            headers=raw.headers,
            body=raw.body,
            json=_decode_json(raw.body, raw.header("content-encoding")),
            received_at=time.monotonic(),
        )


def _connection_header(keep_alive: bool) -> list[tuple[str, str]]:
    return [] if keep_alive else [("Connection", "close")]


def _scratch_record() -> RecordedRequest:
    """Return a throw-away record for control API responses, which are not stored."""
    return RecordedRequest(0, "", "", "", "", {}, [], b"", None, 0.0)
