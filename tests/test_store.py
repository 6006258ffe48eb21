"""Usage store, statistics snapshot, usage queue, request log files and application log."""

import json
import logging
import os
import sqlite3
import stat
import threading
import time
import tracemalloc
from datetime import datetime

import pytest

from providers.usage import Usage
from store.applog import AppLogHandler
from store.records import (
    Attempt,
    Outcome,
    RequestRecord,
    format_rfc3339,
    key_fingerprint,
    parse_rfc3339,
)
from store.redact import Redactor
from store.report import format_usage_table
from store.request_log import RequestLogWriter, log_file_name
from store.statistics import InvalidSnapshotError
from store.usage_queue import UsageQueue
from store.usage_store import UsageStore

HOUR = 3600.0
DAY = 86400.0


def make_record(index: int = 0, **overrides) -> RequestRecord:
    values = dict(
        request_id=f"req-{index}",
        timestamp=time.time() - index,
        route="POST /v1/messages",
        dialect="anthropic",
        key_label="team",
        requested_model="claude-sonnet-4-5",
        upstream_model="claude-sonnet-4-5-20250929",
        provider="claude",
        account="alice.json",
        status=200,
        outcome=Outcome.SUCCESS,
        latency_ms=1234.4,
        ttfb_ms=321.6,
        bytes_in=100,
        bytes_out=2000,
        usage=Usage(input=10, output=20, cache_read=30, cache_write=5, reasoning=4),
        stream=True,
        attempts=[Attempt("alice.json", 200)],
        auth_index="a1",
    )
    values.update(overrides)
    return RequestRecord(**values)


@pytest.fixture
def store(tmp_path):
    usage_store = UsageStore(tmp_path / "usage.db")
    yield usage_store
    usage_store.close()


def submit_all(usage_store: UsageStore, records) -> None:
    for record in records:
        usage_store.submit(record)
    assert usage_store.flush(timeout=10)


def all_numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from all_numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from all_numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


# Records


def test_key_fingerprint_format():
    label = key_fingerprint("sk-proxy-secret-0123456789")
    assert label.startswith("key-")
    assert len(label) == 12
    assert "secret" not in label


def test_key_fingerprint_stable_and_distinct():
    assert key_fingerprint("a-key") == key_fingerprint("a-key")
    assert key_fingerprint("a-key") != key_fingerprint("b-key")


def test_record_dict_roundtrip():
    record = make_record(attempts=[Attempt("a", 429, 30.0, "rate limited"), Attempt("b", 200)])
    assert RequestRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_client_disconnect_not_failed():
    assert not make_record(outcome=Outcome.CLIENT_DISCONNECTED, status=0).failed


def test_rejected_is_failed():
    assert make_record(outcome=Outcome.REJECTED, status=401).failed


def test_rfc3339_roundtrip():
    timestamp = 1767225600.123456
    assert parse_rfc3339(format_rfc3339(timestamp)) == pytest.approx(timestamp, abs=1e-6)


def test_rfc3339_parses_go_nanoseconds():
    assert parse_rfc3339("2026-01-01T00:00:00.123456789Z") == pytest.approx(
        1767225600.123456, abs=1e-6
    )


# Snapshot shape


def test_empty_store_snapshot(store):
    assert store.aggregate() == {
        "usage": {
            "total_requests": 0,
            "success_count": 0,
            "failure_count": 0,
            "total_tokens": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "apis": {},
            "requests_by_day": {},
            "requests_by_hour": {},
            "tokens_by_day": {},
            "tokens_by_hour": {},
        },
        "failed_requests": 0,
    }


def test_snapshot_totals(store):
    submit_all(store, [
        make_record(0),
        make_record(1, outcome=Outcome.UPSTREAM_ERROR, status=529, usage=None),
        make_record(2, key_label="key-0badc0de", requested_model="gpt-5"),
    ])
    result = store.aggregate()
    usage = result["usage"]
    assert usage["total_requests"] == 3
    assert usage["success_count"] == 2
    assert usage["failure_count"] == 1
    assert result["failed_requests"] == 1
    assert usage["total_tokens"] == 2 * 65
    assert usage["input_tokens"] == 2 * 45
    assert usage["output_tokens"] == 2 * 20


def test_snapshot_groups_by_key_and_model(store):
    submit_all(store, [
        make_record(0),
        make_record(1),
        make_record(2, key_label="key-0badc0de", requested_model="gpt-5"),
    ])
    apis = store.aggregate()["usage"]["apis"]
    assert set(apis) == {"team", "key-0badc0de"}
    assert apis["team"]["total_requests"] == 2
    assert apis["team"]["total_tokens"] == 130
    assert set(apis["team"]["models"]) == {"claude-sonnet-4-5"}
    assert apis["key-0badc0de"]["models"]["gpt-5"]["total_requests"] == 1


def test_snapshot_detail_fields(store):
    submit_all(store, [make_record(0)])
    model = store.aggregate()["usage"]["apis"]["team"]["models"]["claude-sonnet-4-5"]
    assert set(model) == {"total_requests", "total_tokens", "details"}
    (detail,) = model["details"]
    assert set(detail) == {"timestamp", "latency_ms", "source", "auth_index", "tokens", "failed"}
    assert detail["latency_ms"] == 1234
    assert detail["source"] == "alice.json"
    assert detail["auth_index"] == "a1"
    assert detail["failed"] is False
    assert detail["tokens"] == {
        "input_tokens": 45,
        "output_tokens": 20,
        "reasoning_tokens": 4,
        "cached_tokens": 30,
        "total_tokens": 65,
    }
    assert parse_rfc3339(detail["timestamp"]) == pytest.approx(make_record(0).timestamp, abs=1)


def test_snapshot_numbers_are_ints(store):
    submit_all(store, [make_record(0), make_record(1, usage=None, latency_ms=0.4)])
    numbers = list(all_numbers(store.aggregate()))
    assert numbers
    assert all(type(number) is int for number in numbers)


def test_snapshot_day_and_hour_buckets(store):
    timestamp = time.time() - 2 * HOUR
    submit_all(store, [make_record(0, timestamp=timestamp), make_record(1, timestamp=timestamp)])
    usage = store.aggregate()["usage"]
    local = time.localtime(timestamp)
    day = time.strftime("%Y-%m-%d", local)
    hour = time.strftime("%H", local)
    assert usage["requests_by_day"] == {day: 2}
    assert usage["requests_by_hour"] == {hour: 2}
    assert usage["tokens_by_day"] == {day: 130}
    assert usage["tokens_by_hour"] == {hour: 130}


def test_snapshot_details_bounded(store):
    submit_all(store, [make_record(index) for index in range(5)])
    details = store.aggregate(details_per_model=3)["usage"]["apis"]["team"]["models"][
        "claude-sonnet-4-5"
    ]["details"]
    assert len(details) == 3
    # The newest three requests (indexes 0, 1, 2), oldest first.
    stamps = [parse_rfc3339(detail["timestamp"]) for detail in details]
    assert stamps == sorted(stamps)
    assert stamps[-1] == pytest.approx(make_record(0).timestamp, abs=1)


def test_usage_snapshot_unwrapped(store):
    submit_all(store, [make_record(0)])
    assert store.usage_snapshot() == store.aggregate()["usage"]


def test_snapshot_since_filters(store):
    submit_all(store, [make_record(0), make_record(1, timestamp=time.time() - 3 * DAY)])
    assert store.aggregate(since=time.time() - DAY)["usage"]["total_requests"] == 1


def test_request_without_key_grouped_by_route(store):
    submit_all(store, [make_record(0, key_label="")])
    assert list(store.aggregate()["usage"]["apis"]) == ["POST /v1/messages"]


# Durability


def test_restart_keeps_totals(tmp_path):
    first = UsageStore(tmp_path / "usage.db")
    submit_all(first, [make_record(index) for index in range(4)])
    before = first.aggregate()
    first.close()

    second = UsageStore(tmp_path / "usage.db")
    try:
        assert second.aggregate() == before
        assert second.count() == 4
    finally:
        second.close()


def test_close_writes_queued_records(tmp_path):
    first = UsageStore(tmp_path / "usage.db")
    for index in range(50):
        first.submit(make_record(index))
    first.close()

    second = UsageStore(tmp_path / "usage.db")
    try:
        assert second.count() == 50
    finally:
        second.close()


def test_database_files_owner_only(tmp_path):
    usage_store = UsageStore(tmp_path / "usage.db")
    try:
        submit_all(usage_store, [make_record(0)])
        files = [path for path in tmp_path.iterdir() if path.name.startswith("usage.db")]
        assert {path.name for path in files} >= {"usage.db", "usage.db-wal", "usage.db-shm"}
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    finally:
        usage_store.close()


def test_duplicate_request_id_stored_once(store):
    submit_all(store, [make_record(0), make_record(0)])
    assert store.count() == 1


# Export and import


def test_export_shape(store):
    submit_all(store, [make_record(0)])
    exported = store.export()
    assert exported["version"] == 1
    assert parse_rfc3339(exported["exported_at"]) == pytest.approx(time.time(), abs=60)
    detail = exported["usage"]["apis"]["team"]["models"]["claude-sonnet-4-5"]["details"][0]
    assert detail["request_id"] == "req-0"


def test_export_import_into_empty_store(store, tmp_path):
    submit_all(store, [
        make_record(index, outcome=Outcome.UPSTREAM_ERROR if index % 3 == 0 else Outcome.SUCCESS)
        for index in range(7)
    ] + [make_record(10, key_label="other", usage=None)])
    exported = json.loads(json.dumps(store.export()))

    target = UsageStore(tmp_path / "target.db")
    try:
        result = target.import_(exported)
        assert result == {"added": 8, "skipped": 0, "total_requests": 8, "failed_requests": 3}
        assert target.aggregate() == store.aggregate()
    finally:
        target.close()


def test_import_twice_adds_nothing(store, tmp_path):
    submit_all(store, [make_record(index) for index in range(3)])
    exported = store.export()
    target = UsageStore(tmp_path / "target.db")
    try:
        target.import_(exported)
        second = target.import_(exported)
        assert second["added"] == 0
        assert second["skipped"] == 3
        assert target.aggregate()["usage"]["total_requests"] == 3
    finally:
        target.close()


def test_import_own_export_adds_nothing(store):
    submit_all(store, [make_record(index) for index in range(3)])
    result = store.import_(store.export())
    assert result["added"] == 0
    assert result["total_requests"] == 3


def legacy_export(timestamp: str) -> dict:
    detail = {
        "timestamp": timestamp,
        "latency_ms": 900,
        "source": "bob@example.com",
        "auth_index": "7",
        "tokens": {"input_tokens": 50, "output_tokens": 10, "reasoning_tokens": 0,
                   "cached_tokens": 0, "total_tokens": 60},
        "failed": False,
    }
    details = [detail, dict(detail, failed=True)]
    model = {"total_requests": 2, "total_tokens": 120, "details": details}
    return {"version": 1, "usage": {"apis": {"sk-legacy": {"models": {"gemini-2.5-pro": model}}}}}


def test_import_legacy_dedupes_without_request_id(store):
    stamp = datetime.now().astimezone().isoformat()
    first = store.import_(legacy_export(stamp))
    second = store.import_(legacy_export(stamp))
    assert first["added"] == 2
    assert second["added"] == 0
    assert second["skipped"] == 2
    assert second["failed_requests"] == 1


def test_import_skips_details_beyond_retention(store):
    old = datetime.fromtimestamp(time.time() - 60 * DAY).astimezone().isoformat()
    result = store.import_(legacy_export(old))
    assert result["added"] == 0
    assert result["skipped"] == 2


def test_import_version_zero_accepted(store):
    data = legacy_export(datetime.now().astimezone().isoformat())
    data["version"] = 0
    assert store.import_(data)["added"] == 2


@pytest.mark.parametrize("data", [{"version": 2, "usage": {}}, {"version": 1}, [], {"usage": 5}])
def test_import_invalid_document_raises(store, data):
    with pytest.raises(InvalidSnapshotError):
        store.import_(data)


# Writing off the request path


class SlowDiskStore(UsageStore):
    """A store whose writer thread takes `delay` seconds per batch."""

    delay = 0.3

    def _write_batch(self, connection, batch):
        time.sleep(self.delay)
        super()._write_batch(connection, batch)


def test_submit_does_not_wait_for_slow_disk(tmp_path):
    slow = SlowDiskStore(tmp_path / "usage.db", batch_size=10)
    try:
        started = time.perf_counter()
        for index in range(100):
            slow.submit(make_record(index))
        submit_seconds = time.perf_counter() - started

        assert submit_seconds < slow.delay
        assert slow.flush(timeout=0.01) is False
        assert slow.flush(timeout=30)
        assert slow.count() == 100
    finally:
        slow.close()


def test_submit_drops_when_queue_full(tmp_path):
    release = threading.Event()

    class BlockedStore(UsageStore):
        def _write_batch(self, connection, batch):
            release.wait(10)
            super()._write_batch(connection, batch)

    blocked = BlockedStore(tmp_path / "usage.db", max_pending=5, batch_size=1)
    try:
        for index in range(20):
            blocked.submit(make_record(index))
        assert blocked.dropped_records >= 14
        release.set()
        assert blocked.flush(timeout=10)
        assert blocked.count() == 20 - blocked.dropped_records
    finally:
        release.set()
        blocked.close()


def test_disk_error_counted_not_raised(tmp_path, caplog):
    class FailingStore(UsageStore):
        def _write_batch(self, connection, batch):
            raise sqlite3.OperationalError("disk I/O error")

    failing = FailingStore(tmp_path / "usage.db")
    try:
        with caplog.at_level(logging.ERROR, logger="store.usage_store"):
            failing.submit(make_record(0))
            assert failing.flush(timeout=10)
        assert failing.write_errors == 1
        assert "disk I/O error" in caplog.text
    finally:
        failing.close()


def test_bad_record_spares_its_batch(store):
    bad = make_record(1, attempts=[Attempt("alice.json", 200, reason=object())])
    for record in (make_record(0), bad, make_record(2)):
        store.submit(record)
    assert store.flush(timeout=10)
    assert store.write_errors == 1
    assert store.count() == 2


def test_submit_after_close_dropped(tmp_path):
    usage_store = UsageStore(tmp_path / "usage.db")
    usage_store.close()
    usage_store.submit(make_record(0))
    assert usage_store.dropped_records == 1


def test_readers_during_writes(store):
    errors = []
    stop = threading.Event()

    def read_repeatedly():
        while not stop.is_set():
            try:
                store.aggregate()
                store.totals("day")
            except Exception as error:  # noqa: BLE001 - the test reports any failure
                errors.append(error)

    readers = [threading.Thread(target=read_repeatedly) for _ in range(2)]
    for reader in readers:
        reader.start()
    for index in range(300):
        store.submit(make_record(index))
    assert store.flush(timeout=30)
    stop.set()
    for reader in readers:
        reader.join()
    assert errors == []
    assert store.count() == 300


# Retention


def test_prune_deletes_expired(store):
    submit_all(store, [make_record(0), make_record(1, timestamp=time.time() - 40 * DAY)])
    assert store.prune() == 1
    assert store.count() == 1


def test_open_prunes_expired(tmp_path):
    first = UsageStore(tmp_path / "usage.db", retention_days=None)
    submit_all(first, [make_record(0), make_record(1, timestamp=time.time() - 10 * DAY)])
    first.close()

    second = UsageStore(tmp_path / "usage.db", retention_days=5)
    try:
        assert second.count() == 1
    finally:
        second.close()


def test_writer_prunes_periodically(tmp_path):
    periodic = UsageStore(tmp_path / "usage.db", prune_interval_seconds=0.05)
    try:
        submit_all(periodic, [make_record(0), make_record(1, timestamp=time.time() - 40 * DAY)])
        deadline = time.monotonic() + 10
        while periodic.count() != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert periodic.count() == 1
    finally:
        periodic.close()


# Usage queue


def test_queue_pop_fields(store):
    store.submit(make_record(0, key_label="key-1234abcd"))
    (entry,) = store.queue_pop(10)
    assert entry["api_key"] == "key-1234abcd"
    assert entry["request_id"] == "req-0"
    assert entry["endpoint"] == "POST /v1/messages"
    assert entry["model"] == "claude-sonnet-4-5-20250929"
    assert entry["alias"] == "claude-sonnet-4-5"
    assert entry["source"] == "alice.json"
    assert entry["auth_index"] == "a1"
    assert entry["latency_ms"] == 1234
    assert entry["ttft_ms"] == 322
    assert entry["failed"] is False
    assert entry["tokens"]["input_tokens"] == 45
    assert entry["tokens"]["cache_creation_tokens"] == 5
    assert entry["tokens"]["total_tokens"] == 65


def test_queue_pop_is_destructive(store):
    for index in range(5):
        store.submit(make_record(index))
    first = store.queue_pop(3)
    second = store.queue_pop(3)
    assert [entry["request_id"] for entry in first] == ["req-0", "req-1", "req-2"]
    assert [entry["request_id"] for entry in second] == ["req-3", "req-4"]
    assert store.queue_pop(3) == []


def test_queue_pop_rejects_non_positive_count(store):
    with pytest.raises(ValueError):
        store.queue_pop(0)


def test_queue_drops_expired_entries():
    now = [1000.0]
    usage_queue = UsageQueue(retention_seconds=HOUR, clock=lambda: now[0])
    usage_queue.push(make_record(0))
    now[0] += HOUR + 1
    usage_queue.push(make_record(1))
    assert [entry["request_id"] for entry in usage_queue.pop(10)] == ["req-1"]


def test_queue_bounded():
    usage_queue = UsageQueue(max_entries=3)
    for index in range(5):
        usage_queue.push(make_record(index))
    assert [entry["request_id"] for entry in usage_queue.pop(10)] == ["req-2", "req-3", "req-4"]


def test_queue_unknown_usage_flagged():
    usage_queue = UsageQueue()
    usage_queue.push(make_record(0, usage=None, ttfb_ms=None, outcome=Outcome.PROXY_ERROR,
                                 status=502))
    (entry,) = usage_queue.pop(1)
    assert entry["usage_known"] is False
    assert entry["tokens"]["total_tokens"] == 0
    assert entry["ttft_ms"] == 0
    assert entry["fail"] == {"status_code": 502}


def test_queue_entries_stay_compact():
    usage_queue = UsageQueue()
    count = 2000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(count):
            # Fresh objects per record, as the tap builds them, with token counts above the
            # small integers that Python caches.
            usage = Usage(input=1000 + index, output=2000 + index, cache_read=3000 + index)
            usage_queue.push(make_record(index, request_id=f"{index:016x}", usage=usage,
                                         latency_ms=1000.5 + index, ttfb_ms=300.5 + index))
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    # Measured on CPython 3.12: about 670 bytes when the queue kept whole records, about 300
    # with packed entries.
    assert per_entry < 400, f"{per_entry:.0f} bytes per queued record"
    entries = usage_queue.pop(count)
    assert entries[-1]["request_id"] == f"{count - 1:016x}"
    assert entries[-1]["tokens"]["input_tokens"] == 1000 + count - 1 + 3000 + count - 1
    assert entries[-1]["latency_ms"] == round(1000.5 + count - 1)


def test_queue_clamps_huge_token_counts():
    usage_queue = UsageQueue()
    usage_queue.push(make_record(0, usage=Usage(input=1 << 70, output=7)))
    (entry,) = usage_queue.pop(1)
    assert entry["tokens"]["input_tokens"] == (1 << 63) - 1
    assert entry["tokens"]["output_tokens"] == 7


# Totals and the usage table


MID_MONTH = datetime(2026, 3, 15, 12, 0, 0).timestamp()


@pytest.fixture
def dated_store(tmp_path):
    usage_store = UsageStore(tmp_path / "usage.db", retention_days=None)
    submit_all(usage_store, [
        make_record(0, timestamp=MID_MONTH - HOUR),
        make_record(1, timestamp=MID_MONTH - 2 * HOUR, account="bob.json"),
        make_record(2, timestamp=MID_MONTH - 2 * DAY, usage=None),
        make_record(3, timestamp=MID_MONTH - 40 * DAY),
    ])
    yield usage_store
    usage_store.close()


def test_totals_today(dated_store):
    rows = dated_store.totals("day", now=MID_MONTH)
    assert [(row.account, row.requests) for row in rows] == [("alice.json", 1), ("bob.json", 1)]
    assert rows[0].total_tokens == 65


def test_totals_month(dated_store):
    (row,) = dated_store.totals("month", group_by=("key",), now=MID_MONTH)
    assert row.key == "team"
    assert row.model == ""
    assert row.requests == 3
    assert row.usage_unknown == 1
    assert row.total_tokens == 130


def test_totals_rejects_unknown_group(dated_store):
    with pytest.raises(ValueError):
        dated_store.totals("day", group_by=("region",))


def test_totals_rejects_unknown_period(dated_store):
    with pytest.raises(ValueError):
        dated_store.totals("week")


def test_usage_table_lists_periods(dated_store):
    rows = dated_store.totals("day", now=MID_MONTH) + dated_store.totals("month", now=MID_MONTH)
    table = format_usage_table(rows)
    assert table.startswith("Today\nKEY")
    assert "This month" in table
    assert "bob.json" in table
    assert "TOTAL" in table


def test_usage_table_empty_period():
    assert format_usage_table([]) == "Today: no requests\n\nThis month: no requests\n"


# Request log files


SECRET_HEADERS = [("Authorization", "Bearer sk-proxy-0123456789abcdefghij"), ("Accept", "*/*")]


def open_log(writer: RequestLogWriter, request_id: str = "abc123", body: bytes = b'{"a": 1}'):
    return writer.open(request_id, "POST", "/v1/chat/completions?key=abc", SECRET_HEADERS, body)


def test_log_file_name_format():
    timestamp = datetime(2026, 8, 22, 10, 15, 30).timestamp()
    assert log_file_name("/v1/chat/completions", "a1b2c3d4", timestamp) == (
        "v1-chat-completions-2026-08-22T101530-a1b2c3d4.log"
    )


def test_log_file_name_sanitized():
    name = log_file_name("/v1beta/models/gemini:streamGenerateContent?alt=sse", "../x", 0)
    assert name.startswith("v1beta-models-gemini-streamGenerateContent-")
    assert name.endswith("-x.log")
    assert "/" not in name


def test_full_log_sections_in_order(tmp_path):
    writer = RequestLogWriter(tmp_path, Redactor(), full=True)
    handle = open_log(writer)
    handle.add_attempt("alice.json", 429, cooldown_seconds=30, reason="rate limited")
    handle.add_attempt("bob.json", 200)
    handle.set_response(200, [("Content-Type", "text/event-stream")])
    handle.append_response(b"data: one\n\n")
    handle.append_response(b"data: two\n\n")
    handle.close(200)

    (path,) = tmp_path.glob("v1-chat-completions-*-abc123.log")
    text = path.read_text()
    titles = [line for line in text.splitlines() if line.startswith("=== ")]
    assert titles == [
        "=== REQUEST ===",
        "=== REQUEST HEADERS ===",
        "=== REQUEST BODY ===",
        "=== UPSTREAM ATTEMPT 1 ===",
        "=== UPSTREAM ATTEMPT 2 ===",
        "=== RESPONSE HEADERS ===",
        "=== RESPONSE BODY ===",
        "=== END ===",
    ]
    assert "data: one\n\ndata: two\n\n" in text
    assert "Account: alice.json\nStatus: 429\nCooldown-Seconds: 30\nReason: rate limited" in text
    assert "Bearer sk-p...ghij" in text
    assert "URL: /v1/chat/completions?key=[REDACTED]" in text


def test_full_log_file_owner_only(tmp_path):
    writer = RequestLogWriter(tmp_path, Redactor(), full=True)
    handle = open_log(writer)
    handle.close(200)
    assert stat.S_IMODE(handle.path.stat().st_mode) == 0o600


def test_streamed_body_appended_before_close(tmp_path):
    writer = RequestLogWriter(tmp_path, Redactor(), full=True)
    handle = open_log(writer)
    handle.append_response(b"data: first\n\n")
    handle._sink._file.flush()
    assert b"data: first" in handle.path.read_bytes()
    handle.close(200)


def test_file_cap_truncates_with_marker(tmp_path):
    writer = RequestLogWriter(tmp_path, Redactor(), full=True, max_file_bytes=2000)
    handle = open_log(writer)
    for _ in range(100):
        handle.append_response(b"x" * 100)
    handle.close(200)
    text = handle.path.read_text()
    assert "[request log truncated at 2000 bytes]" in text
    assert "=== END ===" in text
    assert handle.path.stat().st_size < 2000 + 200


def test_directory_cap_deletes_oldest(tmp_path):
    writer = RequestLogWriter(tmp_path, Redactor(), full=True, max_dir_bytes=5000)
    paths = []
    for index in range(10):
        handle = open_log(writer, request_id=f"r{index}", body=b"y" * 800)
        handle.close(200)
        os.utime(handle.path, (1000 + index, 1000 + index))
        paths.append(handle.path)
    writer.enforce_directory_limit()
    total = sum(path.stat().st_size for path in tmp_path.glob("*.log"))
    assert total <= 5000
    assert paths[-1].exists()
    assert not paths[0].exists()


def test_error_only_mode_keeps_failed(tmp_path):
    writer = RequestLogWriter(tmp_path, Redactor(), full=False)
    ok = open_log(writer, request_id="good")
    ok.close(200)
    bad = open_log(writer, request_id="bad")
    bad.set_response(502, [])
    bad.append_response(b'{"error": "upstream"}')
    bad.close(502)
    names = [path.name for path in tmp_path.iterdir()]
    assert len(names) == 1
    assert names[0].startswith("error-v1-chat-completions-")
    assert names[0].endswith("-bad.log")
    assert '{"error": "upstream"}' in (tmp_path / names[0]).read_text()


def test_error_only_mode_keeps_last_n(tmp_path):
    writer = RequestLogWriter(tmp_path, Redactor(), full=False, error_files_kept=3)
    for index in range(6):
        handle = open_log(writer, request_id=f"e{index}")
        handle.close(500)
        for path in tmp_path.glob(f"*-e{index}.log"):
            os.utime(path, (1000 + index, 1000 + index))
    kept_ids = sorted(info.name.rsplit("-", 1)[1] for info in writer.error_files())
    assert kept_ids == ["e3.log", "e4.log", "e5.log"]


def test_error_only_client_cancel_not_kept(tmp_path):
    writer = RequestLogWriter(tmp_path, Redactor(), full=False)
    open_log(writer).close(499)
    assert list(tmp_path.iterdir()) == []


def test_find_by_request_id(tmp_path):
    writer = RequestLogWriter(tmp_path, Redactor(), full=True)
    handle = open_log(writer, request_id="find-me")
    handle.close(200)
    assert writer.find_by_request_id("find-me") == handle.path
    assert writer.find_by_request_id("../find-me") is None


def test_unwritable_directory_does_not_raise(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    writer = RequestLogWriter(blocker / "logs", Redactor(), full=True)
    handle = open_log(writer)
    handle.append_response(b"data")
    handle.close(200)
    assert writer.write_errors == 1


# Application log


@pytest.fixture
def applog():
    handler = AppLogHandler(Redactor(["management-key-123456"]), max_lines=100)
    logger = logging.getLogger("cliproxy.test.applog")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    yield handler, logger
    logger.removeHandler(handler)
    handler.close()


def emit_at(logger: logging.Logger, created: float, message: str, *args, **kwargs) -> None:
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, args, None)
    record.created = created
    logger.handle(record)


def test_applog_line_format(applog):
    handler, logger = applog
    created = datetime(2026, 5, 6, 7, 8, 9).timestamp()
    emit_at(logger, created, "started on port %d", 8317)
    assert handler.lines_after()["lines"] == [
        "[2026-05-06 07:08:09] [info] [cliproxy.test.applog] started on port 8317"
    ]


def test_applog_after_is_strict(applog):
    handler, logger = applog
    for offset, text in ((0, "a"), (1, "b"), (1, "c"), (2, "d")):
        emit_at(logger, 1000 + offset, text)
    result = handler.lines_after(after=1001)
    assert [line[-1] for line in result["lines"]] == ["d"]
    assert result["latest-timestamp"] == 1002
    assert result["line-count"] == 1


def test_applog_after_without_new_lines_echoes_after(applog):
    handler, logger = applog
    emit_at(logger, 1000, "a")
    assert handler.lines_after(after=5000) == {
        "lines": [],
        "line-count": 0,
        "latest-timestamp": 5000,
    }


def test_applog_without_after_returns_all(applog):
    handler, logger = applog
    emit_at(logger, 1000, "a")
    emit_at(logger, 1005, "b")
    result = handler.lines_after()
    assert result["line-count"] == 2
    assert result["latest-timestamp"] == 1005


def test_applog_empty_latest_is_zero(applog):
    handler, _ = applog
    assert handler.lines_after()["latest-timestamp"] == 0


def test_applog_limit_returns_newest(applog):
    handler, logger = applog
    for offset in range(5):
        emit_at(logger, 1000 + offset, str(offset))
    assert [line[-1] for line in handler.lines_after(limit=2)["lines"]] == ["3", "4"]


def test_applog_traceback_lines_share_timestamp(applog):
    handler, logger = applog
    try:
        raise RuntimeError("boom")
    except RuntimeError as error:
        exc_info = (type(error), error, error.__traceback__)
    record = logger.makeRecord(
        logger.name, logging.ERROR, __file__, 0, "request failed", (), exc_info
    )
    record.created = 1000.5
    logger.handle(record)

    lines = handler.lines_after(after=999)["lines"]
    assert lines[0].endswith("[error] [cliproxy.test.applog] request failed")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: boom"
    assert handler.lines_after(after=1000)["lines"] == []


def test_applog_zero_means_no_filter(applog):
    handler, logger = applog
    for offset in range(3):
        emit_at(logger, 1000 + offset, str(offset))
    assert handler.lines_after(after=0, limit=0)["line-count"] == 3


def test_applog_ring_bounded(applog):
    handler, logger = applog
    for index in range(150):
        emit_at(logger, 1000 + index, str(index))
    lines = handler.lines_after()["lines"]
    assert len(lines) == 100
    assert lines[0].endswith(" 50")


def test_applog_redacts(applog):
    handler, logger = applog
    logger.warning("login with management-key-123456 and Bearer abcdefghijklmnopqrstuvwxyz")
    (line,) = handler.lines_after()["lines"]
    assert "management-key-123456" not in line
    assert "abcdefghijklmnopqrstuvwxyz" not in line


def test_applog_clear(applog, tmp_path):
    handler, logger = applog
    handler.set_directory(tmp_path)
    emit_at(logger, 1000, "a")
    emit_at(logger, 1001, "b")
    assert handler.clear() == 2
    assert handler.lines_after()["lines"] == []
    assert (tmp_path / "main.log").read_text() == ""


def test_applog_file_rotates(tmp_path):
    handler = AppLogHandler(Redactor(), directory=tmp_path, max_file_bytes=500, backup_count=2)
    logger = logging.getLogger("cliproxy.test.rotate")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for index in range(40):
            logger.warning("line %d %s", index, "x" * 40)
    finally:
        logger.removeHandler(handler)
        handler.close()
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["main.log", "main.log.1", "main.log.2"]
    assert (tmp_path / "main.log").stat().st_size <= 500
    assert stat.S_IMODE((tmp_path / "main.log").stat().st_mode) == 0o600
    assert "line 39 " in (tmp_path / "main.log").read_text()


def test_applog_file_off_by_default(applog, tmp_path):
    handler, logger = applog
    emit_at(logger, 1000, "a")
    assert handler.directory is None
