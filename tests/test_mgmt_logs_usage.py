"""`/logs`, `/request-error-logs` and `/usage` over the log and usage source interfaces."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mgmt.context import LogLines
from mgmt.testing import Harness, response_json


class FakeLogs:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.lines = [(100, "[2026-01-01 00:01:40] [-] [info] a"), (200, "[2026-01-01 00:03:20] [-] [warn] b")]

    def lines_after(self, after: int | None = None, limit: int | None = None) -> LogLines:
        self.calls.append((after, limit))
        after = after or 0
        newer = [text for stamp, text in self.lines if stamp > after]
        if limit:
            newer = newer[-limit:]
        latest = max([stamp for stamp, _ in self.lines if stamp > after], default=after)
        return {"lines": newer, "line-count": len(self.lines), "latest-timestamp": latest}

    def clear(self) -> int:
        removed = len(self.lines)
        self.lines = []
        return removed


class FakeUsage:
    def aggregate(self) -> dict[str, Any]:
        snapshot = {
            "total_requests": 10,
            "success_count": 8,
            "failure_count": 2,
            "total_tokens": 1234,
            "input_tokens": 1000,
            "output_tokens": 234,
            "apis": {"key-1": {"total_requests": 10, "total_tokens": 1234, "models": {}}},
            "requests_by_day": {"2026-01-01": 10},
        }
        return {"usage": snapshot, "failed_requests": 2}


class BrokenUsage:
    def aggregate(self) -> dict[str, Any]:
        raise OSError("database is locked")


def test_logs_after_and_limit(tmp_path: Path) -> None:
    logs = FakeLogs()
    harness = Harness(tmp_path, logs=logs)
    first = response_json(harness.call("GET", "/v0/management/logs"))
    assert first["lines"] == [text for _, text in logs.lines]
    assert first["latest-timestamp"] == 200
    newer = response_json(harness.call("GET", "/v0/management/logs?after=100&limit=5"))
    assert newer["lines"] == ["[2026-01-01 00:03:20] [-] [warn] b"]
    assert logs.calls[-1] == (100, 5)


@pytest.mark.parametrize("query", ["after=abc", "after=-1", "limit=x"])
def test_logs_invalid_query(tmp_path: Path, query: str) -> None:
    response = Harness(tmp_path, logs=FakeLogs()).call("GET", f"/v0/management/logs?{query}")
    assert response.status == 400


def test_logs_clear(tmp_path: Path) -> None:
    harness = Harness(tmp_path, logs=FakeLogs())
    response = response_json(harness.call("DELETE", "/v0/management/logs"))
    assert response == {"success": True, "message": "Logs cleared successfully", "removed": 2}
    assert response_json(harness.call("GET", "/v0/management/logs"))["lines"] == []


def test_logs_without_source(tmp_path: Path) -> None:
    response = response_json(Harness(tmp_path).call("GET", "/v0/management/logs?after=42"))
    assert response == {"lines": [], "line-count": 0, "latest-timestamp": 42}


def test_usage_from_source(tmp_path: Path) -> None:
    body = response_json(Harness(tmp_path, usage=FakeUsage()).call("GET", "/v0/management/usage"))
    assert body["failed_requests"] == 2
    assert body["usage"]["total_requests"] == 10
    assert body["usage"]["input_tokens"] == 1000
    assert body["usage"]["requests_by_day"] == {"2026-01-01": 10}
    assert body["usage"]["tokens_by_hour"] == {}


def test_usage_zeros_without_store(tmp_path: Path) -> None:
    body = response_json(Harness(tmp_path).call("GET", "/v0/management/usage"))
    assert body["failed_requests"] == 0
    counters = ("total_requests", "success_count", "failure_count", "total_tokens")
    assert all(body["usage"][key] == 0 for key in counters)


def test_request_error_logs(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    (logs_dir / "error-1.log").write_text("old")
    (logs_dir / "error-2.log").write_text("newer")
    (logs_dir / "main.log").write_text("not listed")
    os.utime(logs_dir / "error-1.log", (1000, 1000))
    listing = response_json(harness.call("GET", "/v0/management/request-error-logs"))
    assert [item["name"] for item in listing["files"]] == ["error-2.log", "error-1.log"]
    assert listing["files"][1] == {"name": "error-1.log", "size": 3, "modified": 1000}

    download = harness.call("GET", "/v0/management/request-error-logs/error-2.log")
    assert download.content() == b"newer"
    for name in ("main.log", "..%2Fconfig.yaml", "error-..%2F..%2Fx.log"):
        status = harness.call("GET", f"/v0/management/request-error-logs/{name}").status
        assert status in (400, 404), name
    assert harness.call("GET", "/v0/management/request-error-logs/error-9.log").status == 404


def test_usage_store_failure_is_404(tmp_path: Path) -> None:
    response = Harness(tmp_path, usage=BrokenUsage()).call("GET", "/v0/management/usage")
    assert response.status == 404
    assert "database is locked" in response_json(response)["error"]


def test_usage_export_without_store(tmp_path: Path) -> None:
    assert Harness(tmp_path).call("GET", "/v0/management/usage/export").status == 404


def test_usage_queue_pops_records() -> None:
    from mgmt.router import MgmtRequest
    from mgmt.usage import usage_queue

    class Queue:
        def __init__(self) -> None:
            self.items = [{"request_id": "a"}, {"request_id": "b"}]

        def queue_pop(self, count: int) -> list:
            popped, self.items = self.items[:count], self.items[count:]
            return popped

    class Context:
        usage = Queue()

    first = usage_queue(Context(), MgmtRequest.build("GET", "/usage-queue?count=1"))
    rest = usage_queue(Context(), MgmtRequest.build("GET", "/usage-queue?count=5"))
    assert first.json == [{"request_id": "a"}]
    assert rest.json == [{"request_id": "b"}]


def test_usage_queue_rejects_bad_count() -> None:
    import pytest

    from mgmt.router import HttpError, MgmtRequest
    from mgmt.usage import usage_queue

    class Context:
        usage = type("Queue", (), {"queue_pop": lambda self, count: []})()

    with pytest.raises(HttpError) as error:
        usage_queue(Context(), MgmtRequest.build("GET", "/usage-queue?count=0"))
    assert error.value.status == 400
