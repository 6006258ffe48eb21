"""Minimal HTTP/1.1 client pieces on raw asyncio: request bytes and an incremental response parser.

The load generator and the SSE measurements share them. Only what the benchmark needs is
supported: Content-Length, chunked and close-delimited bodies, no trailers, no 1xx responses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass


def chat_body(stream: bool, events: int = 50, gap_us: int = 0) -> bytes:
    """Build a chat completion request body; the fake upstream reads the `bench:` directive for SSE."""
    content = f"bench:events={events},gap_us={gap_us}" if stream else "Say hello."
    return json.dumps(
        {"model": "bench-model", "messages": [{"role": "user", "content": content}], "stream": stream},
        separators=(",", ":"),
    ).encode()


def build_request(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """Build a keep-alive POST request with a Content-Length body."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ProtocolError(Exception):
    """The server sent bytes that are not a valid HTTP/1.1 response."""


@dataclass
class ResponseHead:
    """Status and headers (lower-case names) of one response."""

    status: int
    headers: dict[str, str]


class ResponseParser:
    """Incremental HTTP/1.1 response parser.

    `feed(data)` calls on_body(bytes) for each body piece and on_complete(head) when a response
    ends. Bytes after the end of one response start the next one (keep-alive).
    """

    def __init__(self, on_body: Callable[[bytes], None], on_complete: Callable[[ResponseHead], None]) -> None:
        self.on_body = on_body
        self.on_complete = on_complete
        self.buffer = bytearray()
        self.head: ResponseHead | None = None
        self.remaining = 0
        self.mode = "head"  # head | length | chunk-size | chunk-data | chunk-crlf | trailer | close

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while self.buffer:
            if not self._step():
                return

    def feed_eof(self) -> None:
        """Finish a close-delimited body; raise ProtocolError if the connection closed mid-response."""
        if self.mode == "close" and self.head is not None:
            self._complete()
        elif self.mode != "head" or self.buffer:
            raise ProtocolError(f"connection closed mid-response (state {self.mode})")

    def _step(self) -> bool:
        if self.mode == "head":
            return self._parse_head()
        if self.mode == "length":
            take = min(self.remaining, len(self.buffer))
            self.on_body(bytes(self.buffer[:take]))
            del self.buffer[:take]
            self.remaining -= take
            if self.remaining == 0:
                self._complete()
            return True
        if self.mode == "chunk-size":
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return False
            try:
                self.remaining = int(bytes(self.buffer[:line_end]).split(b";")[0], 16)
            except ValueError as error:
                raise ProtocolError(f"invalid chunk size line {bytes(self.buffer[:line_end])!r}") from error
            del self.buffer[: line_end + 2]
            self.mode = "trailer" if self.remaining == 0 else "chunk-data"
            return True
        if self.mode == "chunk-data":
            take = min(self.remaining, len(self.buffer))
            self.on_body(bytes(self.buffer[:take]))
            del self.buffer[:take]
            self.remaining -= take
            if self.remaining == 0:
                self.mode = "chunk-crlf"
            return True
        if self.mode == "chunk-crlf":
            if len(self.buffer) < 2:
                return False
            del self.buffer[:2]
            self.mode = "chunk-size"
            return True
        if self.mode == "trailer":
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return False
            del self.buffer[: line_end + 2]
            if line_end == 0:
                self._complete()
            return True
        # close-delimited body
        self.on_body(bytes(self.buffer))
        self.buffer.clear()
        return False

    def _parse_head(self) -> bool:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        lines = bytes(self.buffer[:head_end]).decode("latin-1").split("\r\n")
        del self.buffer[: head_end + 4]
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"invalid status line {lines[0]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.head = ResponseHead(int(parts[1]), headers)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.mode = "chunk-size"
        elif "content-length" in headers:
            self.remaining = int(headers["content-length"])
            self.mode = "length"
            if self.remaining == 0:
                self._complete()
        elif self.head.status in (204, 304):
            self._complete()
        else:
            self.mode = "close"
        return True

    def _complete(self) -> None:
        head = self.head
        self.head = None
        self.mode = "head"
        assert head is not None
        self.on_complete(head)
