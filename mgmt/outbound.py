"""A small blocking HTTP client for the management tools (`/api-call`, `/latest-version`).

It runs in the management worker threads, never on the proxy's event loop. It ignores the
environment's proxy variables (only an explicit proxy URL is used), never decompresses or
follows redirects by itself, and enforces one deadline over connect, send and read.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

# Largest response body read; the rest is dropped and the body marked truncated.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_READ_CHUNK = 64 * 1024


class OutboundError(Exception):
    """The request could not be sent or its response could not be read."""


@dataclass(frozen=True)
class OutboundResponse:
    """An upstream response: headers keep their order and repeats."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    truncated: bool = False

    def header(self, name: str) -> str | None:
        """Return the first value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


def _connection(
    scheme: str, host: str, port: int, proxy_url: str, timeout: float
) -> tuple[http.client.HTTPConnection, dict[str, str], bool]:
    """Open a connection to the target, through an http:// proxy when `proxy_url` is set.

    Returns the connection, headers the request must add (proxy credentials), and whether
    the request line must carry the absolute URL (plain HTTP through a proxy).
    """
    context = ssl.create_default_context()
    if not proxy_url or proxy_url in ("direct", "none"):
        if scheme == "https":
            connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
            return connection, {}, False
        return http.client.HTTPConnection(host, port, timeout=timeout), {}, False

    proxy = urlsplit(proxy_url)
    if proxy.scheme != "http" or not proxy.hostname:
        raise OutboundError(
            f"outbound proxy {proxy.scheme}:// is not supported here; use an http:// proxy"
        )
    proxy_headers = {}
    if proxy.username is not None:
        credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
        proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(
            credentials.encode()
        ).decode("ascii")
    proxy_port = proxy.port or 80
    if scheme == "https":
        tunnel = http.client.HTTPSConnection(
            proxy.hostname, proxy_port, timeout=timeout, context=context
        )
        tunnel.set_tunnel(host, port, headers=proxy_headers)
        return tunnel, {}, False
    plain = http.client.HTTPConnection(proxy.hostname, proxy_port, timeout=timeout)
    return plain, proxy_headers, True


def send(
    method: str,
    url: str,
    headers: list[tuple[str, str]],
    body: bytes | None,
    *,
    timeout: float,
    proxy_url: str = "",
) -> OutboundResponse:
    """Send one request and read the whole response within `timeout` seconds in total."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundError(f"invalid url {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query

    deadline = time.monotonic() + timeout
    connection, proxy_headers, absolute = _connection(
        parts.scheme, parts.hostname, port, proxy_url, timeout
    )
    try:
        connection.putrequest(method, url if absolute else target, skip_accept_encoding=True)
        for name, value in [*headers, *proxy_headers.items()]:
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()

        chunks = []
        size = 0
        truncated = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OutboundError(f"timed out after {timeout:g} s")
            if connection.sock is not None:
                connection.sock.settimeout(remaining)
            chunk = response.read(_READ_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                truncated = True
                break
            chunks.append(chunk)
        return OutboundResponse(response.status, response.getheaders(), b"".join(chunks), truncated)
    except (OSError, http.client.HTTPException, socket.timeout) as exc:
        if isinstance(exc, TimeoutError | socket.timeout):
            raise OutboundError(f"timed out after {timeout:g} s") from None
        raise OutboundError(str(exc) or type(exc).__name__) from None
    finally:
        connection.close()
