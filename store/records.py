"""The record of one proxied request, as the tap builds it and the usage store keeps it.

The tap must not put a proxy key into a record. `key_label` is the key's configured name
or `key_fingerprint(key)`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from providers.usage import Usage


class Outcome(StrEnum):
    """Final result of a request."""

    SUCCESS = "success"
    UPSTREAM_ERROR = "upstream_error"
    CLIENT_DISCONNECTED = "client_disconnected"
    REJECTED = "rejected"
    PROXY_ERROR = "proxy_error"


# Outcomes that count as failures in statistics. A client that disconnects (for example a
# user cancelling a turn) is not a failure of the proxy or of the upstream.
FAILED_OUTCOMES = frozenset({Outcome.UPSTREAM_ERROR, Outcome.REJECTED, Outcome.PROXY_ERROR})


def key_fingerprint(key: str) -> str:
    """Return a short stable label for a proxy key that has no configured name.

    The label is `key-` plus the first 8 hex digits of the key's SHA-256, which identifies
    the key in statistics without revealing it.
    """
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One upstream attempt of a request: the account tried and its response status.

    `status` is 0 when no HTTP response arrived (connection error or timeout).
    """

    account: str
    status: int
    cooldown_seconds: float | None = None
    reason: str = ""


@dataclass(slots=True)
class RequestRecord:
    """Everything the statistics keep about one client request.

    Times are epoch seconds (`timestamp`, when the request arrived) and milliseconds
    (`latency_ms`, `ttfb_ms`). `status` is the final HTTP status sent to the client, or 0
    when none was sent. `usage` is None when the upstream reported no usage. `auth_index`
    is the account's identifier in the management API (`auth_index` of `/auth-files`).
    """

    request_id: str
    timestamp: float
    route: str
    dialect: str
    key_label: str
    requested_model: str
    upstream_model: str
    provider: str
    account: str
    status: int
    outcome: Outcome
    latency_ms: float
    ttfb_ms: float | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    usage: Usage | None = None
    stream: bool = False
    attempts: list[Attempt] = field(default_factory=list)
    auth_index: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED_OUTCOMES

    @property
    def model(self) -> str:
        """The model name statistics group by: the requested one, else the upstream one."""
        return self.requested_model or self.upstream_model or "unknown"

    def to_dict(self) -> dict[str, Any]:
        """Return the record as JSON-compatible data."""
        data = asdict(self)
        data["outcome"] = self.outcome.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestRecord:
        values = dict(data)
        values["outcome"] = Outcome(values["outcome"])
        usage = values.get("usage")
        values["usage"] = Usage(**usage) if usage is not None else None
        values["attempts"] = [Attempt(**attempt) for attempt in values.get("attempts", ())]
        return cls(**values)


def format_rfc3339(timestamp: float) -> str:
    """Format epoch seconds as RFC 3339 in local time with its UTC offset."""
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="microseconds")


def parse_rfc3339(text: str) -> float:
    """Parse an RFC 3339 timestamp (`Z` or an offset, any fraction digits) to epoch seconds.

    A timestamp without an offset is read as local time. Raises ValueError for text that is
    not an ISO 8601 date and time.
    """
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.timestamp()
