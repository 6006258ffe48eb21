"""Access control for the management API: loopback rule, key check, lockout, cross-site rules.

Every decision uses the socket peer address. `X-Forwarded-For`, `X-Real-IP` and `Forwarded`
are never read, so a remote caller cannot claim to be local.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from mgmt.keys import ManagementKeys, extract_presented_key
from mgmt.router import UNSAFE_METHODS, MgmtRequest, MgmtResponse, error

logger = logging.getLogger(__name__)

MAX_FAILURES = 5
LOCKOUT_SECONDS = 30 * 60
# Entries idle this long with no active lockout are dropped.
IDLE_ENTRY_SECONDS = 2 * 60 * 60
# Upper bound on tracked addresses, so remote callers cannot grow memory without limit.
MAX_TRACKED_ADDRESSES = 10_000

CORS_ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_ALLOWED_HEADERS = "Authorization, Content-Type, X-Management-Key"


def is_loopback(peer_ip: str) -> bool:
    """Return True for 127.0.0.0/8, ::1 and their IPv4-mapped IPv6 forms (::ffff:127.0.0.1)."""
    host = peer_ip.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host.split("%", 1)[0]  # zone index of a link-local address
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def format_duration(seconds: float) -> str:
    """Format seconds like Go's time.Duration rounded to seconds, e.g. `29m13s`."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass
class _Attempts:
    failures: int = 0
    locked_until: float = 0.0
    last_seen: float = 0.0


class FailedAuthTracker:
    """Counts wrong management keys per peer address and locks an address out.

    `max_failures` wrong keys in a row lock the address for `lockout_seconds`; a correct key
    resets the count. State is in memory only and thread-safe.
    """

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        lockout_seconds: float = LOCKOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self._clock = clock
        self._entries: dict[str, _Attempts] = {}
        self._lock = threading.Lock()

    def lockout_remaining(self, peer_ip: str) -> float:
        """Return the seconds left of the lockout of `peer_ip`, 0 when it is not locked."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(peer_ip)
            if entry is None or entry.locked_until <= now:
                return 0.0
            return entry.locked_until - now

    def record_failure(self, peer_ip: str) -> bool:
        """Count a wrong key from `peer_ip`; return True when this failure locked it out."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(peer_ip)
            if entry is None:
                self._make_room(now)
                entry = self._entries[peer_ip] = _Attempts()
            entry.last_seen = now
            entry.failures += 1
            if entry.failures < self.max_failures:
                return False
            entry.failures = 0
            entry.locked_until = now + self.lockout_seconds
        logger.warning(
            "management API: %d wrong keys from %s; locked out for %s",
            self.max_failures,
            peer_ip,
            format_duration(self.lockout_seconds),
        )
        return True

    def record_success(self, peer_ip: str) -> None:
        """Forget the failures of `peer_ip` after a correct key."""
        with self._lock:
            self._entries.pop(peer_ip, None)

    def _make_room(self, now: float) -> None:
        if len(self._entries) < MAX_TRACKED_ADDRESSES:
            return
        stale = [
            ip
            for ip, entry in self._entries.items()
            if entry.locked_until <= now and now - entry.last_seen > IDLE_ENTRY_SECONDS
        ]
        for ip in stale:
            del self._entries[ip]
        if len(self._entries) >= MAX_TRACKED_ADDRESSES:
            # Drop the unlocked entry seen longest ago; active lockouts are kept.
            unlocked = [
                (entry.last_seen, ip)
                for ip, entry in self._entries.items()
                if entry.locked_until <= now
            ]
            if unlocked:
                del self._entries[min(unlocked)[1]]


def is_own_origin(origin: str, port: int) -> bool:
    """Return True when `origin` is this proxy's own loopback origin on `port`."""
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or parts.hostname is None:
        return False
    if origin_port is None:
        origin_port = 443 if parts.scheme == "https" else 80
    return origin_port == port and (parts.hostname == "localhost" or is_loopback(parts.hostname))


def is_preflight(request: MgmtRequest) -> bool:
    """Return True for a CORS preflight: OPTIONS with Origin and Access-Control-Request-Method."""
    return (
        request.method == "OPTIONS"
        and "origin" in request.headers
        and "access-control-request-method" in request.headers
    )


class ManagementGuard:
    """Decides whether a management request may reach its handler.

    `check()` returns the response that ends the request (refusal or CORS preflight), or None
    when the handler may run. The order: preflight, loopback rule, lockout, cross-site
    origin, missing key (401, not counted), wrong key (401, counted).
    """

    def __init__(
        self,
        keys: ManagementKeys,
        allow_remote: Callable[[], bool],
        listen_port: Callable[[], int],
        tracker: FailedAuthTracker | None = None,
    ) -> None:
        self.keys = keys
        self._allow_remote = allow_remote
        self._listen_port = listen_port
        self.tracker = tracker or FailedAuthTracker()

    def check(self, request: MgmtRequest) -> MgmtResponse | None:
        """Return a response that ends `request`, or None when it is authorised."""
        origin = request.headers.get("origin")
        own_origin = origin is not None and is_own_origin(origin, self._listen_port())

        if is_preflight(request):
            return self._preflight(origin if own_origin else None)

        if not is_loopback(request.peer_ip) and not self._allow_remote():
            return error(403, "remote management disabled")

        remaining = self.tracker.lockout_remaining(request.peer_ip)
        if remaining > 0:
            return error(
                403,
                "IP banned due to too many failed attempts. "
                f"Try again in {format_duration(remaining)}",
            )

        if origin is not None and not own_origin and request.method in UNSAFE_METHODS:
            logger.warning(
                "management API: rejected cross-site %s %s from origin %r (peer %s)",
                request.method,
                request.path,
                origin,
                request.peer_ip,
            )
            return error(403, "cross-site request rejected")

        presented = extract_presented_key(request.headers)
        if not presented:
            return error(401, "missing management key")
        if not self.keys.verify(presented):
            self.tracker.record_failure(request.peer_ip)
            return error(401, "invalid management key")
        self.tracker.record_success(request.peer_ip)
        return None

    def cors_headers(self, request: MgmtRequest) -> dict[str, str]:
        """Return CORS headers for a response: Allow-Origin only for the proxy's own origin."""
        origin = request.headers.get("origin")
        if origin is not None and is_own_origin(origin, self._listen_port()):
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {"Vary": "Origin"} if origin is not None else {}

    @staticmethod
    def _preflight(allowed_origin: str | None) -> MgmtResponse:
        response = MgmtResponse(204, body=b"")
        response.headers["Vary"] = "Origin"
        if allowed_origin is not None:
            response.headers.update(
                {
                    "Access-Control-Allow-Origin": allowed_origin,
                    "Access-Control-Allow-Methods": CORS_ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": CORS_ALLOWED_HEADERS,
                    "Access-Control-Max-Age": "600",
                }
            )
        return response
