"""In-memory queue of per-request usage records for `GET /usage-queue?count=N`.

Consumers pop records destructively, as from CLIProxyAPI's usage queue. Records leave the
queue when popped, when older than `retention_seconds`, or when the queue has
`max_entries` and a newer record arrives.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from store.records import RequestRecord, format_rfc3339

DEFAULT_QUEUE_RETENTION_SECONDS = 3600.0
DEFAULT_QUEUE_MAX_ENTRIES = 10_000


def queue_entry(record: RequestRecord) -> dict[str, Any]:
    """Convert a record to a usage-queue entry with CLIProxyAPI's field names.

    `api_key` is the key label, never the key. `model` is the upstream model and `alias`
    the model the client requested. Unknown usage gives zero counts with
    `usage_known: false`, and a missing first byte gives `ttft_ms: 0`.
    """
    usage = record.usage
    entry: dict[str, Any] = {
        "timestamp": format_rfc3339(record.timestamp),
        "latency_ms": round(record.latency_ms),
        "ttft_ms": round(record.ttfb_ms) if record.ttfb_ms is not None else 0,
        "source": record.account,
        "auth_index": record.auth_index,
        "tokens": {
            "input_tokens": usage.prompt if usage else 0,
            "output_tokens": usage.output if usage else 0,
            "reasoning_tokens": usage.reasoning if usage else 0,
            "cached_tokens": usage.cache_read if usage else 0,
            "cache_read_tokens": usage.cache_read if usage else 0,
            "cache_creation_tokens": usage.cache_write if usage else 0,
            "total_tokens": usage.total if usage else 0,
        },
        "usage_known": usage is not None,
        "failed": record.failed,
        "provider": record.provider,
        "model": record.upstream_model or record.requested_model,
        "alias": record.requested_model,
        "endpoint": record.route,
        "request_id": record.request_id,
        "api_key": record.key_label,
    }
    if record.failed:
        entry["fail"] = {"status_code": record.status}
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
        # Records are converted to entries when popped, which keeps `push` cheap.
        self._entries: deque[tuple[float, RequestRecord]] = deque(maxlen=max_entries)
        self._lock = threading.Lock()
        self._clock = clock

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def push(self, record: RequestRecord) -> None:
        with self._lock:
            self._entries.append((self._clock(), record))

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
                popped.append(self._entries.popleft()[1])
        return [queue_entry(record) for record in popped]

    def _drop_expired(self) -> None:
        oldest_kept = self._clock() - self.retention_seconds
        while self._entries and self._entries[0][0] < oldest_kept:
            self._entries.popleft()
