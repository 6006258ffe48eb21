"""Records of the requests the fake upstream received, and the times its stream frames left.

Records are kept in arrival order. A test thread may read them while the server thread
adds to them, so every access goes through one lock.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RecordedRequest:
    """One request as the fake upstream received it, and the status it returned."""

    seq: int
    account: str
    method: str
    path: str
    """Path without the `/acct/<name>` prefix and without the query string."""
    raw_path: str
    """Request target exactly as received, with the prefix and the query string."""
    query: dict[str, str]
    """Query parameters; when a name repeats, the last value is kept."""
    headers: list[tuple[str, str]]
    """Header names and values in the order and case received (bytes decoded as Latin-1)."""
    body: bytes
    """Body as received, before any Content-Encoding is decoded."""
    json: Any
    """Body decoded per Content-Encoding (gzip, deflate, zstd) and parsed; None if not JSON."""
    received_at: float
    """time.monotonic() when the request head and body had been read."""
    status: int | None = None
    """Status code of the response; None until the response headers are written."""
    client_disconnected: bool = False
    """True when the client hung up before the response was complete."""
    event_times: list[float] = field(default_factory=list)
    """time.monotonic() after each stream frame was written and drained, in frame order."""

    def header(self, name: str) -> str | None:
        """Return the first value of header `name`, matched case-insensitively, or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Return every value of header `name`, matched case-insensitively, in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]


class Recorder:
    """Thread-safe store of `RecordedRequest`s that keeps at most `max_records` of them.

    Counts include requests whose records were dropped to respect `max_records`.
    """

    def __init__(self, max_records: int | None = 10_000) -> None:
        self._lock = threading.Lock()
        self._records: deque[RecordedRequest] = deque(maxlen=max_records)
        self._by_seq: dict[int, RecordedRequest] = {}
        self._counts: dict[str, int] = {}
        self._total = 0
        self._next_seq = 1

    def add(self, **fields: Any) -> RecordedRequest:
        """Create a record with the next sequence number and store it."""
        with self._lock:
            record = RecordedRequest(seq=self._next_seq, **fields)
            self._next_seq += 1
            if self._records.maxlen is not None and len(self._records) == self._records.maxlen:
                if self._records.maxlen == 0:
                    self._count(record.account)
                    return record
                dropped = self._records[0]
                self._by_seq.pop(dropped.seq, None)
            self._records.append(record)
            self._by_seq[record.seq] = record
            self._count(record.account)
            return record

    def _count(self, account: str) -> None:
        self._counts[account] = self._counts.get(account, 0) + 1
        self._total += 1

    def requests(self, account: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            if account is None:
                return list(self._records)
            return [record for record in self._records if record.account == account]

    def count(self, account: str | None = None) -> int:
        with self._lock:
            if account is None:
                return self._total
            return self._counts.get(account, 0)

    def event_times(self, seq: int) -> list[float]:
        """Return the monotonic times at which each frame of the response to request `seq` was written and drained."""
        with self._lock:
            record = self._by_seq.get(seq)
            return list(record.event_times) if record is not None else []

    def clear(self) -> None:
        """Drop all records and counts. Sequence numbers keep increasing."""
        with self._lock:
            self._records.clear()
            self._by_seq.clear()
            self._counts.clear()
            self._total = 0
