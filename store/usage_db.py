"""SQLite schema and row conversion of the usage store.

One table, `requests`, has one row per client request. Token columns use the statistics
meaning: `input_tokens` counts all prompt tokens (cache reads and writes included), so
`input_tokens + output_tokens = total_tokens` for rows the proxy recorded. Imported rows
keep the numbers of the export they came from.

`identity` makes imports idempotent. It is `rid:<request_id>` when the request id is known,
else a SHA-256 over the fields CLIProxyAPI's legacy import compared: API, model,
timestamp, source, auth index, failed flag and token counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from store.records import RequestRecord

SCHEMA_VERSION = 1
WRITER_CACHE_KIB = 512

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    identity TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL DEFAULT '',
    ts REAL NOT NULL,
    route TEXT NOT NULL DEFAULT '',
    dialect TEXT NOT NULL DEFAULT '',
    key_label TEXT NOT NULL DEFAULT '',
    requested_model TEXT NOT NULL DEFAULT '',
    upstream_model TEXT NOT NULL DEFAULT '',
    provider TEXT NOT NULL DEFAULT '',
    account TEXT NOT NULL DEFAULT '',
    auth_index TEXT NOT NULL DEFAULT '',
    status INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL,
    failed INTEGER NOT NULL,
    latency_ms REAL NOT NULL DEFAULT 0,
    ttfb_ms REAL,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    stream INTEGER NOT NULL DEFAULT 0,
    usage_known INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    attempts TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
"""

COLUMNS = (
    "identity",
    "request_id",
    "ts",
    "route",
    "dialect",
    "key_label",
    "requested_model",
    "upstream_model",
    "provider",
    "account",
    "auth_index",
    "status",
    "outcome",
    "failed",
    "latency_ms",
    "ttfb_ms",
    "bytes_in",
    "bytes_out",
    "stream",
    "usage_known",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "total_tokens",
    "attempts",
)

INSERT_SQL = (
    f"INSERT OR IGNORE INTO requests ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(':' + column for column in COLUMNS)})"
)

# SQL expressions for the statistics groups. A request without a key label is grouped
# under its route, as CLIProxyAPI grouped requests without a client key by endpoint.
API_SQL = "COALESCE(NULLIF(key_label, ''), NULLIF(route, ''), 'unknown')"
MODEL_SQL = "COALESCE(NULLIF(requested_model, ''), NULLIF(upstream_model, ''), 'unknown')"
ACCOUNT_SQL = "COALESCE(NULLIF(account, ''), 'unknown')"


class UsageStoreError(Exception):
    """The usage database could not be opened, read or written."""


def prepare_database_file(path: Path) -> None:
    """Create the database file and its directory, readable by the owner only.

    SQLite creates the `-wal` and `-shm` files with the database file's permissions.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(descriptor)
    os.chmod(path, 0o600)


def open_connection(path: Path) -> sqlite3.Connection:
    """Open a connection to an existing usage database, waiting up to 5 s for locks."""
    return sqlite3.connect(path, timeout=5.0)


def open_database(path: Path) -> sqlite3.Connection:
    """Open a connection in WAL mode with a busy timeout, creating the schema if missing."""
    connection = sqlite3.connect(path, timeout=5.0, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    # SQLite documents that WAL with synchronous=NORMAL stays consistent after a power loss
    # and may lose only the most recent commits.
    connection.execute("PRAGMA synchronous=NORMAL")
    # A page cache of 512 KiB instead of SQLite's default 2000 KiB: the usage store uses this
    # connection only to insert and prune, and the smaller cache keeps the proxy's resident
    # size flatter while the file grows.
    connection.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
    with connection:
        connection.executescript(_SCHEMA)
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version > SCHEMA_VERSION:
            connection.close()
            raise UsageStoreError(
                f"usage database {path} has schema version {version}, newer than the "
                f"supported {SCHEMA_VERSION}; upgrade cliproxy or move the file away"
            )
    return connection


@contextmanager
def read_transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run several queries on one consistent view, even while the writer thread commits."""
    connection.execute("BEGIN")
    try:
        yield connection
    finally:
        connection.rollback()


def legacy_identity(
    api: str,
    model: str,
    timestamp: float,
    source: str,
    auth_index: str,
    failed: bool,
    tokens: tuple[int, int, int, int, int],
) -> str:
    """Return the identity of a row without a request id, from the legacy import fields."""
    fields = [api, model, round(timestamp * 1_000_000), source, auth_index, bool(failed), tokens]
    digest = hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode()).hexdigest()
    return "sha256:" + digest


def record_row(record: RequestRecord) -> dict[str, Any]:
    """Convert a record to the column values of its `requests` row."""
    usage = record.usage
    row: dict[str, Any] = {
        "request_id": record.request_id,
        "ts": record.timestamp,
        "route": record.route,
        "dialect": record.dialect,
        "key_label": record.key_label,
        "requested_model": record.requested_model,
        "upstream_model": record.upstream_model,
        "provider": record.provider,
        "account": record.account,
        "auth_index": record.auth_index,
        "status": record.status,
        "outcome": record.outcome.value,
        "failed": int(record.failed),
        "latency_ms": record.latency_ms,
        "ttfb_ms": record.ttfb_ms,
        "bytes_in": record.bytes_in,
        "bytes_out": record.bytes_out,
        "stream": int(record.stream),
        "usage_known": int(usage is not None),
        "input_tokens": usage.prompt if usage else 0,
        "output_tokens": usage.output if usage else 0,
        "reasoning_tokens": usage.reasoning if usage else 0,
        "cache_read_tokens": usage.cache_read if usage else 0,
        "cache_write_tokens": usage.cache_write if usage else 0,
        "total_tokens": usage.total if usage else 0,
        "attempts": json.dumps([asdict(attempt) for attempt in record.attempts]),
    }
    row["identity"] = row_identity(row)
    return row


def row_identity(row: dict[str, Any]) -> str:
    """Return the dedupe identity of a row given as column values."""
    if row["request_id"]:
        return "rid:" + row["request_id"]
    tokens = (
        row["input_tokens"],
        row["output_tokens"],
        row["reasoning_tokens"],
        row["cache_read_tokens"],
        row["total_tokens"],
    )
    return legacy_identity(
        row["key_label"] or row["route"] or "unknown",
        row["requested_model"] or row["upstream_model"] or "unknown",
        row["ts"],
        row["account"],
        row["auth_index"],
        bool(row["failed"]),
        tokens,
    )
