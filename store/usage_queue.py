"""In-memory queue of per-request usage records for `GET /usage-queue?count=N`.

Consumers pop records destructively, as from CLIProxyAPI's usage queue. Records leave the
queue when popped, when older than `retention_seconds`, or when the queue has
`max_entries` and a newer record arrives.

The queue may hold `max_entries` records for an hour when no client polls it. It therefore
keeps a `QueuedUsage` tuple per record, with the numbers packed into one bytes object, and
builds the entry dict only when the record is popped.
"""

from __future__ import annotations

import math
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from providers.usage import Usage
from store.records import RequestRecord, format_rfc3339

DEFAULT_QUEUE_RETENTION_SECONDS = 3600.0
DEFAULT_QUEUE_MAX_ENTRIES = 10_000

# queued_at, timestamp, latency_ms, ttfb_ms (NaN when unknown), status, failed, usage known,
# then the input, output, cache read, cache write and reasoning tokens.
_NUMBERS = struct.Struct("<ddddi??qqqqq")
# Token counts come from upstream JSON, so a count beyond the packed field is clamped.
_MAX_TOKENS = (1 << 63) - 1


class QueuedUsage(NamedTuple):
    """The parts of one record that its usage-queue entry needs, kept until it is popped.

    `numbers` packs the times, status and token counts (`_NUMBERS`). The strings are the
    record's own objects, so queueing copies none of them.
    """

    numbers: bytes
    request_id: str
    key_label: str
    account: str
    auth_index: str
    provider: str
    model: str
    alias: str
    endpoint: str

    @classmethod
    def of(cls, record: RequestRecord, queued_at: float) -> QueuedUsage:
        usage = record.usage or Usage()
        tokens = (usage.input, usage.output, usage.cache_read, usage.cache_write, usage.reasoning)
        numbers = _NUMBERS.pack(
            queued_at,
            record.timestamp,
            record.latency_ms,
            record.ttfb_ms if record.ttfb_ms is not None else math.nan,
            record.status,
            record.failed,
            record.usage is not None,
            *(min(count, _MAX_TOKENS) for count in tokens),
        )
        return cls(
            numbers,
            record.request_id,
            record.key_label,
            record.account,
            record.auth_index,
            record.provider,
            record.upstream_model or record.requested_model,
            record.requested_model,
            record.route,
        )

    @property
    def queued_at(self) -> float:
        return _NUMBERS.unpack_from(self.numbers)[0]


def queue_entry(queued: QueuedUsage) -> dict[str, Any]:
    """Convert a queued record to a usage-queue entry with CLIProxyAPI's field names.

    `api_key` is the key label, never the key. `model` is the upstream model and `alias`
    the model the client requested. Unknown usage gives zero counts with
    `usage_known: false`, and a missing first byte gives `ttft_ms: 0`.
    """
    (
        _queued_at,
        timestamp,
        latency_ms,
        ttfb_ms,
        status,
        failed,
        usage_known,
        *tokens,
    ) = _NUMBERS.unpack(queued.numbers)
    usage = Usage(*tokens)
    entry: dict[str, Any] = {
        "timestamp": format_rfc3339(timestamp),
        "latency_ms": round(latency_ms),
        "ttft_ms": 0 if math.isnan(ttfb_ms) else round(ttfb_ms),
        "source": queued.account,
        "auth_index": queued.auth_index,
        "tokens": {
            "input_tokens": usage.prompt,
            "output_tokens": usage.output,
            "reasoning_tokens": usage.reasoning,
            "cached_tokens": usage.cache_read,
            "cache_read_tokens": usage.cache_read,
            "cache_creation_tokens": usage.cache_write,
            "total_tokens": usage.total,
        },
        "usage_known": usage_known,
        "failed": failed,
        "provider": queued.provider,
        "model": queued.model,
        "alias": queued.alias,
        "endpoint": queued.endpoint,
        "request_id": queued.request_id,
        "api_key": queued.key_label,
    }
    if failed:
        entry["fail"] = {"status_code": status}
    return entry


class UsageQueue:
    """Bounded, thread-safe FIFO of usage-queue entries."""

    def __init__(
        self,
        retention_seconds: float = DEFAULT_QUEUE_RETENTION_SECONDS,
        max_entries: int = DEFAULT_QUEUE_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ):
        self.retention_seconds = retention_seconds
        self._entries: deque[QueuedUsage] = deque(maxlen=max_entries)
        self._lock = threading.Lock()
        self._clock = clock

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def push(self, record: RequestRecord) -> None:
        with self._lock:
            self._entries.append(QueuedUsage.of(record, self._clock()))

    def pop(self, count: int) -> list[dict[str, Any]]:
        """Remove and return up to `count` of the oldest entries still within retention.

        Raises ValueError when `count` is not positive.
        """
        if count <= 0:
            raise ValueError(f"count must be a positive integer, got {count}")
        with self._lock:
            self._drop_expired()
            popped = []
            while self._entries and len(popped) < count:
                popped.append(self._entries.popleft())
        return [queue_entry(queued) for queued in popped]

    def _drop_expired(self) -> None:
        oldest_kept = self._clock() - self.retention_seconds
        while self._entries and self._entries[0].queued_at < oldest_kept:
            self._entries.popleft()
