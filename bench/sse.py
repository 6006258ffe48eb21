"""SSE measurements: time to first event, relay delay per event, and many streams held open at once.

The fake upstream writes `@<time.monotonic_ns()>@` into each content event just before the
write. This client reads CLOCK_MONOTONIC too (time.monotonic_ns() on Linux is system-wide), so
receive time minus the embedded time is the delay from the upstream's write to the client's read.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.httpclient import ProtocolError, ResponseHead, ResponseParser, build_request

logger = logging.getLogger(__name__)

_STAMP_RE = re.compile(rb"@(\d{6,})@")
_DONE_MARK = b"data: [DONE]"
# Keep at most this many bytes of an unfinished stamp between two reads.
_TAIL_BYTES = 64


@dataclass
class StreamOutcome:
    """Result of one SSE request."""

    status: int = 0
    ttfe_ns: int | None = None
    delays_ns: list[int] = field(default_factory=list)
    done_seen: bool = False
    error: str | None = None


class _StreamConnection(asyncio.Protocol):
    """Sends one SSE request per `next_request()` call on a keep-alive connection and timestamps each event."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.parser = ResponseParser(self._on_body, self._on_complete)
        self.pending = b""
        self.outcome = StreamOutcome()
        self.sent_ns = 0
        self.received_ns = 0
        self.completed: asyncio.Future[StreamOutcome] | None = None
        self.closed = False
        self.on_first_event: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def next_request(self) -> asyncio.Future[StreamOutcome]:
        assert self.transport is not None
        self.outcome = StreamOutcome()
        self.pending = b""
        self.completed = asyncio.get_running_loop().create_future()
        self.sent_ns = time.monotonic_ns()
        self.transport.write(self.request)
        return self.completed

    def data_received(self, data: bytes) -> None:
        self.received_ns = time.monotonic_ns()
        try:
            self.parser.feed(data)
        except ProtocolError as error:
            self._fail(f"protocol error: {error}")

    def _on_body(self, data: bytes) -> None:
        text = self.pending + data
        last_end = 0
        for match in _STAMP_RE.finditer(text):
            delay = self.received_ns - int(match.group(1))
            if self.outcome.ttfe_ns is None:
                self.outcome.ttfe_ns = self.received_ns - self.sent_ns
                if self.on_first_event is not None:
                    self.on_first_event()
            self.outcome.delays_ns.append(delay)
            last_end = match.end()
        if _DONE_MARK in text:
            self.outcome.done_seen = True
        self.pending = text[last_end:][-_TAIL_BYTES:]

    def _on_complete(self, head: ResponseHead) -> None:
        self.outcome.status = head.status
        if self.completed is not None and not self.completed.done():
            self.completed.set_result(self.outcome)

    def _fail(self, reason: str) -> None:
        self.outcome.error = reason
        if self.completed is not None and not self.completed.done():
            self.completed.set_result(self.outcome)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.completed is not None and not self.completed.done():
            try:
                self.parser.feed_eof()
            except ProtocolError:
                pass
            if not self.completed.done():
                self._fail(f"connection closed: {exc or 'EOF'}")


@dataclass
class RelayResult:
    """Timing of paced SSE streams sent `concurrency` at a time."""

    concurrency: int
    streams: int
    complete: int
    failed: int
    events: int
    expected_events: int
    ttfe_ms: list[float]
    delay_ms: list[float]
    streams_per_s: float
    errors: dict[str, int]


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Return the nearest-rank percentile of an ascending list, or None when it is empty."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def measure_relay(
    port: int,
    path: str,
    headers: dict[str, str],
    body: bytes,
    stamped_events: int,
    streams: int,
    concurrency: int,
    timeout_s: float = 60.0,
) -> RelayResult:
    """Send `streams` SSE requests over `concurrency` keep-alive connections and time every stamped event."""
    loop = asyncio.get_running_loop()
    request = build_request(path, body, headers)
    outcomes: list[StreamOutcome] = []
    errors: dict[str, int] = {}
    remaining = [streams]

    async def worker() -> None:
        try:
            _transport, connection = await loop.create_connection(lambda: _StreamConnection(request), "127.0.0.1", port)
        except OSError as error:
            errors[f"connect: {error.strerror}"] = errors.get(f"connect: {error.strerror}", 0) + 1
            return
        try:
            while remaining[0] > 0 and not connection.closed:
                remaining[0] -= 1
                outcome = await connection.next_request()
                outcomes.append(outcome)
        finally:
            if connection.transport is not None:
                connection.transport.close()

    started = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=timeout_s)
    except TimeoutError:
        errors["timeout"] = errors.get("timeout", 0) + 1
    elapsed = time.perf_counter() - started
    complete = 0
    for outcome in outcomes:
        if outcome.error:
            errors[outcome.error] = errors.get(outcome.error, 0) + 1
        elif outcome.status != 200:
            errors[f"status {outcome.status}"] = errors.get(f"status {outcome.status}", 0) + 1
        elif outcome.done_seen:
            complete += 1
    return RelayResult(
        concurrency=concurrency,
        streams=streams,
        complete=complete,
        failed=streams - complete,
        events=sum(len(outcome.delays_ns) for outcome in outcomes),
        expected_events=streams * stamped_events,
        ttfe_ms=sorted(outcome.ttfe_ns / 1e6 for outcome in outcomes if outcome.ttfe_ns is not None),
        delay_ms=sorted(delay / 1e6 for outcome in outcomes for delay in outcome.delays_ns),
        streams_per_s=round(complete / elapsed, 2) if elapsed else 0.0,
        errors=errors,
    )


@dataclass
class HoldResult:
    """Outcome of holding many streams open at once."""

    streams: int
    complete: int
    failed: int
    max_open: int
    errors: dict[str, int]
    wall_s: float


async def hold_streams(
    port: int,
    path: str,
    headers: dict[str, str],
    body: bytes,
    streams: int,
    ramp_s: float,
    on_all_open: Callable[[], None],
    timeout_s: float,
) -> HoldResult:
    """Open `streams` SSE requests (each on its own connection) spread over ramp_s, and wait for all to end.

    on_all_open runs once: when every stream has received its first event, or at the end if
    some streams never got that far.
    """
    loop = asyncio.get_running_loop()
    request = build_request(path, body, headers)
    open_now = [0]
    max_open = [0]
    first_events = [0]
    signalled = [False]
    outcomes: list[StreamOutcome] = []
    errors: dict[str, int] = {}

    def count_first_event() -> None:
        first_events[0] += 1
        if not signalled[0] and first_events[0] >= streams:
            signalled[0] = True
            on_all_open()

    async def one_stream() -> None:
        try:
            transport, connection = await loop.create_connection(lambda: _StreamConnection(request), "127.0.0.1", port)
        except OSError as error:
            errors[f"connect: {error.strerror}"] = errors.get(f"connect: {error.strerror}", 0) + 1
            return
        open_now[0] += 1
        max_open[0] = max(max_open[0], open_now[0])
        connection.on_first_event = count_first_event
        try:
            outcomes.append(await connection.next_request())
        finally:
            open_now[0] -= 1
            transport.close()

    begin = time.perf_counter()
    tasks = []
    for _ in range(streams):
        tasks.append(asyncio.ensure_future(one_stream()))
        await asyncio.sleep(ramp_s / streams)
    try:
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=timeout_s)
    except TimeoutError:
        errors["timeout"] = errors.get("timeout", 0) + sum(1 for task in tasks if not task.done())
        for task in tasks:
            task.cancel()
    if not signalled[0]:
        signalled[0] = True
        on_all_open()
    complete = 0
    for outcome in outcomes:
        if outcome.error:
            errors[outcome.error] = errors.get(outcome.error, 0) + 1
        elif outcome.status != 200:
            errors[f"status {outcome.status}"] = errors.get(f"status {outcome.status}", 0) + 1
        elif outcome.done_seen:
            complete += 1
    return HoldResult(
        streams=streams,
        complete=complete,
        failed=streams - complete,
        max_open=max_open[0],
        errors=errors,
        wall_s=round(time.perf_counter() - begin, 2),
    )
