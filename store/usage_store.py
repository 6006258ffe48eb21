"""Durable usage store: request records in SQLite, written off the request path.

`submit` only appends to an in-memory queue. One background thread drains that queue and
inserts records in batches, so a slow or failing disk never delays a request. A record the
writer thread fails to insert is logged, counted in `write_errors` and dropped.
Queries open their own connections, and WAL mode lets them read while the writer thread
writes.

Records older than `retention_days` are deleted at open and then every
`prune_interval_seconds`. Imports skip details older than the retention window.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from store import statistics
from store.records import RequestRecord, format_rfc3339
from store.report import UsageTotals
from store.usage_db import (
    INSERT_SQL,
    UsageStoreError,
    open_database,
    open_connection,
    prepare_database_file,
    read_transaction,
    record_row,
)
from store.usage_queue import UsageQueue

logger = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 30
DEFAULT_DETAILS_PER_MODEL = 1000
DEFAULT_MAX_PENDING = 10_000
DEFAULT_BATCH_SIZE = 500
# How long the writer collects records before one transaction writes them all.
DEFAULT_BATCH_DELAY_SECONDS = 0.2
DEFAULT_PRUNE_INTERVAL_SECONDS = 3600.0
# Repeated disk errors and dropped records are logged at most once per this many seconds.
_LOG_INTERVAL_SECONDS = 60.0

_STOP = object()

GroupName = str


class UsageStore:
    """Request records in a SQLite file, with the statistics queries of the management API.

    Raises UsageStoreError when the database cannot be opened or created. `submit` does
    not raise and does not wait for the disk. The query methods raise UsageStoreError on
    database errors.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        retention_days: float | None = DEFAULT_RETENTION_DAYS,
        usage_queue: UsageQueue | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_delay_seconds: float = DEFAULT_BATCH_DELAY_SECONDS,
        prune_interval_seconds: float = DEFAULT_PRUNE_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.time,
    ):
        self.path = Path(path)
        self.retention_days = retention_days
        self.usage_queue = usage_queue if usage_queue is not None else UsageQueue()
        self.batch_size = batch_size
        self.batch_delay_seconds = batch_delay_seconds
        self.prune_interval_seconds = prune_interval_seconds
        self._clock = clock

        # Counters for the management API and metrics. Only the writer thread changes
        # `written_records` and `write_errors`. `dropped_records` is guarded by `_lock`.
        self.written_records = 0
        self.write_errors = 0
        self.dropped_records = 0

        self._lock = threading.Lock()
        self._written_or_dropped = threading.Condition(self._lock)
        self._submitted = 0
        self._finished = 0
        self._closed = False
        self._last_log: dict[str, float] = {}

        try:
            prepare_database_file(self.path)
            self._connection = open_database(self.path)
        except (OSError, sqlite3.Error) as error:
            raise UsageStoreError(f"cannot open usage database {self.path}: {error}") from error
        self._prune_with(self._connection)

        self._pending: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._writer = threading.Thread(
            target=self._run_writer, name="usage-store-writer", daemon=True
        )
        self._writer.start()
        logger.info("usage store opened at %s", self.path)

    # Writing

    def submit(self, record: RequestRecord) -> None:
        """Queue a record for writing and for `queue_pop`, without waiting for the disk.

        The record is dropped, and counted in `dropped_records`, when the store is closed or
        `max_pending` records are already waiting for the disk.
        """
        self.usage_queue.push(record)
        # The lock keeps `close` from queueing its stop marker between the check and the put.
        with self._lock:
            if self._closed:
                self.dropped_records += 1
                return
            try:
                self._pending.put_nowait(record)
            except queue.Full:
                self.dropped_records += 1
                dropped = self.dropped_records
            else:
                self._submitted += 1
                return
        self._log_rate_limited(
            "dropped",
            "usage store queue is full because the disk is slow: %d records dropped so far",
            dropped,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record submitted before this call is written or dropped.

        Returns False if `timeout` seconds passed first.
        """
        with self._lock:
            target = self._submitted
            return self._written_or_dropped.wait_for(
                lambda: self._finished >= target, timeout=timeout
            )

    def close(self, timeout: float = 10.0) -> None:
        """Write the queued records, stop the writer thread and close the database."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._pending.put(_STOP, timeout=timeout)
        except queue.Full:
            logger.error("usage store writer did not drain its queue within %.1f s", timeout)
        self._writer.join(timeout)
        if self._writer.is_alive():
            logger.error("usage store writer did not stop within %.1f s", timeout)
            return
        self._connection.close()
        logger.info("usage store closed (%d records written)", self.written_records)

    def _run_writer(self) -> None:
        next_prune = self._clock() + self.prune_interval_seconds
        stopping = False
        while not stopping:
            try:
                item = self._pending.get(timeout=max(0.0, next_prune - self._clock()))
            except queue.Empty:
                item = None

            # Gather records for a short while before writing: one transaction per request
            # would wake this thread, and take the GIL, for every request under load.
            batch: list[RequestRecord] = []
            gather_until = time.monotonic() + self.batch_delay_seconds
            while item is not None:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= self.batch_size:
                    break
                remaining = gather_until - time.monotonic()
                try:
                    if remaining > 0:
                        item = self._pending.get(timeout=remaining)
                    else:
                        item = self._pending.get_nowait()
                except queue.Empty:
                    item = None

            if batch:
                self._write_safely(batch)
            if self._clock() >= next_prune:
                self._prune_with(self._connection)
                next_prune = self._clock() + self.prune_interval_seconds

    def _write_safely(self, batch: list[RequestRecord]) -> None:
        try:
            self._write_batch(self._connection, batch)
        except Exception:  # noqa: BLE001 - the writer thread must survive any record
            # One bad record must not cost the whole batch, so retry the records one by one.
            for record in batch:
                self._write_one_safely(record)
        else:
            self.written_records += len(batch)
        with self._lock:
            self._finished += len(batch)
            self._written_or_dropped.notify_all()

    def _write_one_safely(self, record: RequestRecord) -> None:
        try:
            self._write_batch(self._connection, [record])
        except Exception as error:  # noqa: BLE001 - the writer thread must survive any record
            self.write_errors += 1
            self._log_rate_limited(
                "write",
                "usage store failed to write request %s to %s: %r (%d write errors so far)",
                record.request_id,
                self.path,
                error,
                self.write_errors,
            )
        else:
            self.written_records += 1

    def _write_batch(self, connection: sqlite3.Connection, batch: list[RequestRecord]) -> None:
        """Insert one batch in one transaction. Tests override this to simulate a slow disk."""
        rows = [record_row(record) for record in batch]
        with connection:
            connection.executemany(INSERT_SQL, rows)

    # Retention

    def oldest_kept(self, now: float | None = None) -> float | None:
        """Return the epoch time before which records are pruned, or None without retention."""
        if self.retention_days is None:
            return None
        return (now if now is not None else self._clock()) - self.retention_days * 86400

    def prune(self, now: float | None = None) -> int:
        """Delete records older than the retention window now. Returns how many were deleted."""
        with self._caller_connection() as connection:
            return self._prune_with(connection, now)

    def _prune_with(self, connection: sqlite3.Connection, now: float | None = None) -> int:
        cutoff = self.oldest_kept(now)
        if cutoff is None:
            return 0
        try:
            with connection:
                deleted = connection.execute("DELETE FROM requests WHERE ts < ?", (cutoff,))
        except sqlite3.Error as error:
            self._log_rate_limited("prune", "usage store pruning failed: %s", error)
            return 0
        if deleted.rowcount:
            logger.info(
                "usage store pruned %d records older than %s days",
                deleted.rowcount,
                self.retention_days,
            )
        return deleted.rowcount

    # Queries

    @contextmanager
    def _caller_connection(self) -> Iterator[sqlite3.Connection]:
        """Open a connection for the calling thread, separate from the writer thread's."""
        try:
            connection = open_connection(self.path)
        except sqlite3.Error as error:
            raise UsageStoreError(f"cannot open usage database {self.path}: {error}") from error
        try:
            yield connection
        except sqlite3.Error as error:
            raise UsageStoreError(f"usage database query failed: {error}") from error
        finally:
            connection.close()

    def aggregate(
        self, since: float | None = None, details_per_model: int | None = DEFAULT_DETAILS_PER_MODEL
    ) -> dict[str, Any]:
        """Return `{"usage": snapshot, "failed_requests": n}` as `GET /usage` sends it.

        `since` is epoch seconds (all records when None). Each model lists its newest
        `details_per_model` requests.
        """
        with self._caller_connection() as connection, read_transaction(connection):
            snapshot = statistics.build_snapshot(connection, since, details_per_model)
        return {"usage": snapshot, "failed_requests": snapshot["failure_count"]}

    def usage_snapshot(self) -> dict[str, Any]:
        """Return the snapshot of every kept record, with bounded details (`UsageSource`)."""
        return self.aggregate()["usage"]

    def export(self) -> dict[str, Any]:
        """Return every kept record as `{"version": 1, "exported_at", "usage": snapshot}`.

        Details carry `request_id` too, so importing the export again adds nothing.
        """
        with self._caller_connection() as connection, read_transaction(connection):
            snapshot = statistics.build_snapshot(
                connection, None, None, include_request_ids=True
            )
        return {
            "version": 1,
            "exported_at": format_rfc3339(self._clock()),
            "usage": snapshot,
        }

    def import_(self, data: dict[str, Any]) -> dict[str, int]:
        """Merge an export into the store, skipping requests it already has.

        Returns `{"added", "skipped", "total_requests", "failed_requests"}`, where the last
        two are the store's totals after the merge. Raises InvalidSnapshotError (a
        ValueError) for an unsupported version or shape.
        """
        rows, skipped = statistics.import_rows(data, self.oldest_kept())
        with self._caller_connection() as connection:
            added = statistics.insert_rows(connection, rows)
            totals = connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(failed), 0) FROM requests"
            ).fetchone()
        skipped += len(rows) - added
        logger.info("usage import added %d records and skipped %d", added, skipped)
        return {
            "added": added,
            "skipped": skipped,
            "total_requests": totals[0],
            "failed_requests": totals[1],
        }

    def queue_pop(self, count: int) -> list[dict[str, Any]]:
        """Remove and return up to `count` usage-queue entries, oldest first.

        Raises ValueError when `count` is not positive.
        """
        return self.usage_queue.pop(count)

    def totals(
        self,
        period: str = "day",
        group_by: tuple[GroupName, ...] = ("key", "model", "account"),
        now: float | None = None,
    ) -> list[UsageTotals]:
        """Sum requests and tokens since the start of the local day or month.

        `period` is "day" or "month". `group_by` names any of "key", "model", "account".
        Raises ValueError for other values.
        """
        moment = datetime.fromtimestamp(now if now is not None else self._clock())
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "month":
            start = start.replace(day=1)
        elif period != "day":
            raise ValueError(f"invalid period {period!r}: expected 'day' or 'month'")
        with self._caller_connection() as connection:
            return statistics.query_totals(connection, period, start.timestamp(), group_by)

    def count(self) -> int:
        """Return the number of stored records."""
        with self._caller_connection() as connection:
            return connection.execute("SELECT COUNT(*) FROM requests").fetchone()[0]

    def _log_rate_limited(self, kind: str, message: str, *arguments: Any) -> None:
        now = time.monotonic()
        if now - self._last_log.get(kind, float("-inf")) < _LOG_INTERVAL_SECONDS:
            return
        self._last_log[kind] = now
        logger.error(message, *arguments)
