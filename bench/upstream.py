"""Fast fake OpenAI-compatible upstream for the benchmark (raw asyncio, HTTP/1.1 keep-alive).

Run: `python -m bench.upstream --port PORT`. It prints `READY port=PORT` once it listens on 127.0.0.1.

Routes:
* `POST /v1/chat/completions` and `POST /acct/<name>/v1/chat/completions`: a chat completion.
  A body with `"stream": true` gets an SSE stream, any other body a 1 KiB JSON response.
  The user message may carry `bench:events=N,gap_us=G`: N SSE events (default 50, counting the
  final usage event and `data: [DONE]`) with G microseconds between writes (default 0: all events
  in one write). Each content event carries `@<time.monotonic_ns()>@` taken just before its write,
  so a client on the same machine can compute the relay delay per event.
* `GET /v1/models`: one model, `bench-model`.
* `GET /healthz`: 200.
* `GET /__bench/stats`: JSON counters (connections, requests per account prefix).

The server logs nothing per request, and the JSON response is a prebuilt byte string, so that
it stays far faster than any proxy under test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import socket
import sys
import time
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

JSON_BODY_SIZE = 1024
DEFAULT_SSE_EVENTS = 50
MODEL_NAME = "bench-model"

_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_DIRECTIVE_RE = re.compile(rb"bench:events=(\d+),gap_us=(\d+)")
_ACCOUNT_RE = re.compile(r"^/acct/([^/]+)(/v1/.*)$")


def build_json_body() -> bytes:
    """Build an OpenAI chat completion padded to exactly JSON_BODY_SIZE bytes."""
    completion = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL_NAME,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ""},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 200, "total_tokens": 212},
    }
    padding = JSON_BODY_SIZE - len(json.dumps(completion, separators=(",", ":")))
    completion["choices"][0]["message"]["content"] = "x" * padding
    body = json.dumps(completion, separators=(",", ":")).encode()
    assert len(body) == JSON_BODY_SIZE, len(body)
    return body


JSON_BODY = build_json_body()
JSON_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(JSON_BODY)
) + JSON_BODY
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
_CONTENT_EVENT = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench-model","choices":[{"index":0,"delta":{"content":"@%d@ tok%d "},"finish_reason":null}]}\n\n'
)
_FINAL_EVENT = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}}\n\n'
)
_DONE_EVENT = b"data: [DONE]\n\n"
MODELS_BODY = json.dumps(
    {"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "created": 1_700_000_000, "owned_by": "bench"}]}
).encode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _simple_response(status: int, reason: bytes, body: bytes, keep_alive: bool) -> bytes:
    connection = b"" if keep_alive else b"connection: close\r\n"
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
        % (status, reason, len(body), connection)
        + body
    )


@dataclass
class Stats:
    """Counters served on /__bench/stats."""

    connections: int = 0
    open_connections: int = 0
    requests: int = 0
    by_account: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "connections": self.connections,
                "open_connections": self.open_connections,
                "requests": self.requests,
                "by_account": self.by_account,
            }
        ).encode()


STATS = Stats()


class UpstreamProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: parses requests in order and responds to each, one SSE stream at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.stream_task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        STATS.connections += 1
        STATS.open_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        STATS.open_connections -= 1
        if self.stream_task is not None:
            self.stream_task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.stream_task is None:
            self._process_buffer()

    def _process_buffer(self) -> None:
        while self.transport is not None and not self.transport.is_closing():
            request = self._parse_request()
            if request is None:
                return
            method, target, headers, body = request
            keep_alive = headers.get(b"connection", b"").lower() != b"close"
            stream = self._respond(method, target, body, keep_alive)
            if stream is not None:
                self.stream_task = asyncio.ensure_future(stream)
                self.stream_task.add_done_callback(self._stream_done)
                return
            if not keep_alive:
                self.transport.close()
                return

    def _parse_request(self) -> tuple[bytes, str, dict[bytes, bytes], bytes] | None:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        lines = bytes(self.buffer[:head_end]).split(b"\r\n")
        try:
            method, target, _version = lines[0].split(b" ", 2)
        except ValueError:
            assert self.transport is not None
            self.transport.close()
            return None
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        body_start = head_end + 4
        if b"content-length" in headers:
            body_end = body_start + int(headers[b"content-length"])
            if len(self.buffer) < body_end:
                return None
            body = bytes(self.buffer[body_start:body_end])
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parsed = self._parse_chunked(body_start)
            if parsed is None:
                return None
            body, body_end = parsed
        else:
            body, body_end = b"", body_start
        del self.buffer[:body_end]
        return method, target.decode("latin-1"), headers, body

    def _parse_chunked(self, position: int) -> tuple[bytes, int] | None:
        parts: list[bytes] = []
        while True:
            line_end = self.buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size = int(bytes(self.buffer[position:line_end]).split(b";")[0], 16)
            data_start = line_end + 2
            if size == 0:
                trailer_end = self.buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    return None
                return b"".join(parts), trailer_end + 4
            if len(self.buffer) < data_start + size + 2:
                return None
            parts.append(bytes(self.buffer[data_start : data_start + size]))
            position = data_start + size + 2

    def _stream_done(self, task: asyncio.Task[None]) -> None:
        self.stream_task = None
        if task.cancelled():
            return
        if task.exception() is not None:
            logger.error("SSE stream failed: %r", task.exception())
            if self.transport is not None:
                self.transport.close()
            return
        if self.buffer:
            self._process_buffer()

    def _respond(self, method: bytes, target: str, body: bytes, keep_alive: bool):  # type: ignore[no-untyped-def]
        assert self.transport is not None
        path = target.split("?", 1)[0]
        account = "-"
        match = _ACCOUNT_RE.match(path)
        if match:
            account, path = match.group(1), match.group(2)
        if method == b"POST" and path == "/v1/chat/completions":
            STATS.requests += 1
            STATS.by_account[account] = STATS.by_account.get(account, 0) + 1
            if _STREAM_RE.search(body):
                return self._stream(body, keep_alive)
            if keep_alive:
                self.transport.write(JSON_RESPONSE)
            else:
                self.transport.write(_simple_response(200, b"OK", JSON_BODY, keep_alive))
        elif method == b"GET" and path == "/v1/models":
            self.transport.write(_simple_response(200, b"OK", MODELS_BODY, keep_alive))
        elif method == b"GET" and path == "/healthz":
            self.transport.write(_simple_response(200, b"OK", b'{"status":"ok"}', keep_alive))
        elif method == b"GET" and path == "/__bench/stats":
            self.transport.write(_simple_response(200, b"OK", STATS.as_json(), keep_alive))
        else:
            self.transport.write(_simple_response(404, b"Not Found", b'{"error":"not found"}', keep_alive))
        return None

    async def _stream(self, body: bytes, keep_alive: bool) -> None:
        assert self.transport is not None
        events, gap_us = DEFAULT_SSE_EVENTS, 0
        directive = _DIRECTIVE_RE.search(body)
        if directive:
            events, gap_us = max(3, int(directive.group(1))), int(directive.group(2))
        content_events = events - 2
        final = _chunk(_FINAL_EVENT % (content_events, content_events + 12)) + _chunk(_DONE_EVENT) + b"0\r\n\r\n"
        if gap_us == 0:
            now = time.monotonic_ns()
            parts = [SSE_HEAD]
            parts.extend(_chunk(_CONTENT_EVENT % (now, index)) for index in range(content_events))
            parts.append(final)
            self.transport.write(b"".join(parts))
        else:
            gap_s = gap_us / 1e6
            self.transport.write(SSE_HEAD)
            for index in range(content_events):
                self.transport.write(_chunk(_CONTENT_EVENT % (time.monotonic_ns(), index)))
                await asyncio.sleep(gap_s)
            self.transport.write(final)
        if not keep_alive:
            self.transport.close()


async def serve(port: int) -> None:
    """Listen on 127.0.0.1:port until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, "127.0.0.1", port, backlog=4096, reuse_address=True)
    print(f"READY port={port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream for the benchmark (127.0.0.1 only).")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on at 127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
