"""Per-request state that the addons share through `flow.metadata["cliproxy"]`."""

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http
from mitmproxy.connection import ConnectionState

from pool.account import Account
from providers.dialects import Dialect, Route

METADATA_KEY = "cliproxy"
REQUEST_ID_HEADER = "x-cliproxy-request-id"


@dataclass
class Attempt:
    """One upstream attempt: the account, its response status, and the cooldown it got."""

    account: str
    status: int
    cooldown_seconds: float = 0.0
    reason: str = ""


@dataclass
class FlowState:
    """The state of one client request while it is in flight."""

    request_id: str
    dialect: Dialect
    route: Route | None
    started: float = field(default_factory=time.time)
    started_perf: float = field(default_factory=time.perf_counter)
    local: bool = False  # responded to by cliproxy itself (management, health, errors)
    outcome: str = ""  # set when cliproxy rejects or fails the request itself
    key_label: str = ""
    key_source: str = ""  # where the proxy key came from: authorization, x-api-key, x-goog-api-key, query
    requested_model: str = ""
    upstream_model: str = ""
    stream: bool = False
    collect_stream: bool = False  # the upstream streams, the client expects one JSON response
    account: Account | None = None
    attempts: list[Attempt] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    rounds: int = 0
    refreshed: set[str] = field(default_factory=set)
    body: dict[str, Any] | None = None
    original_headers: tuple[tuple[bytes, bytes], ...] | None = None  # raw fields, restored on retry
    original_content: bytes | None = None
    original_path: str = ""
    first_byte_perf: float | None = None
    bytes_out: int = 0
    usage_observer: Any = None
    stream_copy: bytearray | None = None
    final: bool = False
    request_log: Any = None  # the tap's request log session (addons/tap.py)
    recorded: bool = False  # the tap has written this request's record

    @classmethod
    def new(cls, dialect: Dialect, route: Route | None) -> "FlowState":
        return cls(request_id=secrets.token_hex(8), dialect=dialect, route=route)


def flow_state(flow: http.HTTPFlow) -> FlowState | None:
    return flow.metadata.get(METADATA_KEY)


def client_gone(flow: http.HTTPFlow) -> Callable[[], bool]:
    """Return a check for whether the client has closed its connection."""
    connection = flow.client_conn

    def gone() -> bool:
        return connection.timestamp_end is not None or not connection.state & ConnectionState.CAN_READ

    return gone
