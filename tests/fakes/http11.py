"""Minimal HTTP/1.1 server-side framing on asyncio streams: request parsing and response heads.

Supports Content-Length and chunked request bodies, `Expect: 100-continue`, keep-alive
(the HTTP/1.1 default, and HTTP/1.0 with `Connection: keep-alive`), and decoding of
gzip, deflate and zstd request bodies (and br when the brotli package is installed).
Pipelined requests are served in order. Upgrades such as WebSocket are not supported.
"""

from __future__ import annotations

import asyncio
import gzip
import http
import zlib
from dataclasses import dataclass

try:
    from compression import zstd  # type: ignore[import-not-found]  # Python 3.14+
except ImportError:  # pragma: no cover - depends on the Python version
    try:
        from backports import zstd  # type: ignore[no-redef]
    except ImportError:
        zstd = None  # type: ignore[assignment]

try:
    import brotli  # type: ignore[import-not-found]
except ImportError:
    brotli = None

MAX_HEAD_BYTES = 1 << 20
"""Limit of the request line plus headers; the StreamReader limit must be at least this."""

_REASONS = {status.value: status.phrase for status in http.HTTPStatus}
_REASONS[529] = "Site Overloaded"


class BadRequest(Exception):
    """The request could not be parsed; the connection gets a 400 and is closed."""


@dataclass(slots=True)
class RawRequest:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def keep_alive(self) -> bool:
        connection = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def build_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """Encode a status line and headers, ending with the blank line."""
    lines = [f"HTTP/1.1 {status} {reason_phrase(status)}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> RawRequest | None:
    """Read one request. Return None when the client closed the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest("connection closed inside the request head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise BadRequest(f"request head is larger than {MAX_HEAD_BYTES} bytes") from exc

    lines = head[:-4].split(b"\r\n")
    # RFC 9112 section 2.2: a server should ignore empty lines before the request line.
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise BadRequest("empty request head")
    try:
        method, target, version = lines[0].decode("latin-1").split(" ")
    except ValueError as exc:
        raise BadRequest(f"invalid request line {lines[0][:200]!r}") from exc
    if not version.startswith("HTTP/1."):
        raise BadRequest(f"unsupported HTTP version {version!r}")

    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"invalid header line {line[:200]!r}")
        headers.append((name, value.strip()))

    request = RawRequest(method, target, version, headers, b"")
    if (request.header("expect") or "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    request.body = await _read_body(reader, request)
    return request


async def _read_body(reader: asyncio.StreamReader, request: RawRequest) -> bytes:
    transfer_encoding = (request.header("transfer-encoding") or "").lower()
    if "chunked" in transfer_encoding:
        return await _read_chunked(reader)
    length = request.header("content-length")
    if length is None:
        return b""
    try:
        size = int(length)
    except ValueError as exc:
        raise BadRequest(f"invalid Content-Length {length!r}") from exc
    if size < 0:
        raise BadRequest(f"invalid Content-Length {length!r}")
    return await reader.readexactly(size)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise BadRequest(f"invalid chunk size {size_text[:40]!r}") from exc
        if size == 0:
            break
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("chunk data is not followed by CRLF")
    # Skip trailer fields up to the blank line that ends the message.
    while (await reader.readuntil(b"\r\n")) != b"\r\n":
        pass
    return b"".join(parts)


def decode_content(body: bytes, content_encoding: str | None) -> bytes:
    """Undo the Content-Encoding codings of a request body, last applied first.

    Raises ValueError for an unknown coding or a body that does not decode.
    """
    if not content_encoding:
        return body
    codings = [coding.strip().lower() for coding in content_encoding.split(",") if coding.strip()]
    for coding in reversed(codings):
        try:
            body = _decode_one(body, coding)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"body does not decode as {coding}: {exc}") from exc
    return body


def _decode_one(body: bytes, coding: str) -> bytes:
    if coding in ("identity", ""):
        return body
    if coding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if coding == "deflate":
        # RFC 9110 deflate is zlib-wrapped, but some clients send raw deflate.
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    if coding == "zstd" and zstd is not None:
        try:
            return zstd.decompress(body)
        except zstd.ZstdError as exc:
            raise ValueError(f"body does not decode as zstd: {exc}") from exc
    if coding == "br" and brotli is not None:
        try:
            return brotli.decompress(body)
        except brotli.error as exc:
            raise ValueError(f"body does not decode as br: {exc}") from exc
    raise ValueError(f"unsupported Content-Encoding {coding!r}")
