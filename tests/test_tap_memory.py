"""Memory under load: many requests through mitmdump must not grow the proxy's resident size."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import requests

from tests.harness import PROXY_KEY
from tests.test_tap_usage import CHAT, CLAUDE

THREADS = 8
WARMUP_REQUESTS = 500
TOTAL_REQUESTS = 5000
# RSS may grow this much after warm-up: allocator noise, the usage database's page cache,
# plus the bounded usage queue that `GET /usage-queue` drains (4,500 more entries of about
# 300 bytes each).
MAX_GROWTH = 0.10


def resident_bytes(pid: int) -> int:
    """Return the resident set size of process `pid` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS line for process {pid}")


def wait_for_count(directory: Path, count: int, timeout: float = 10.0) -> int:
    """Return the number of stored records once it reaches `count`, or after `timeout` seconds."""
    path = directory / "usage.db"
    deadline = time.monotonic() + timeout
    while True:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)) as connection:
            stored = connection.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        if stored >= count or time.monotonic() > deadline:
            return stored
        time.sleep(0.1)


def send(base_url: str, count: int, errors: list[str]) -> None:
    """Send `count` requests on one keep-alive connection: buffered and streamed, two formats."""
    bodies = [
        ("/v1/messages", CLAUDE),
        ("/v1/messages", {**CLAUDE, "stream": True}),
        ("/v1/chat/completions", CHAT),
        ("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}}),
    ]
    with requests.Session() as session:
        session.headers["authorization"] = f"Bearer {PROXY_KEY}"
        for index in range(count):
            path, body = bodies[index % len(bodies)]
            response = session.post(base_url + path, json=body, timeout=30)
            if response.status_code != 200:
                errors.append(f"{path}: {response.status_code} {response.text[:200]}")


def run_load(base_url: str, total: int) -> list[str]:
    """Send `total` requests from `THREADS` threads; return the unexpected responses."""
    errors: list[str] = []
    shares = [total // THREADS + (1 if index < total % THREADS else 0) for index in range(THREADS)]
    threads = [threading.Thread(target=send, args=(base_url, share, errors)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return errors


def test_rss_stays_flat(start_proxy, upstream):
    proxy = start_proxy()
    assert proxy.process is not None
    pid = proxy.process.pid

    assert run_load(proxy.base_url, WARMUP_REQUESTS) == []
    assert wait_for_count(proxy.directory, WARMUP_REQUESTS) == WARMUP_REQUESTS
    baseline = resident_bytes(pid)

    assert run_load(proxy.base_url, TOTAL_REQUESTS - WARMUP_REQUESTS) == []
    assert wait_for_count(proxy.directory, TOTAL_REQUESTS) == TOTAL_REQUESTS
    final = resident_bytes(pid)

    growth = (final - baseline) / baseline
    assert growth <= MAX_GROWTH, f"RSS grew {growth:.1%}: {baseline >> 20} MiB -> {final >> 20} MiB"
