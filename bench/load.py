"""Closed-loop keep-alive load: wrk (preferred) or a built-in asyncio generator when wrk is missing.

Both send the same POST to 127.0.0.1 over `concurrency` keep-alive connections for a fixed
duration and return requests/s and latency percentiles of whole responses (for SSE: the time
until the last byte of the stream).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.httpclient import ProtocolError, ResponseHead, ResponseParser, build_request

logger = logging.getLogger(__name__)

WRK_INSTALL_HINT = "wrk not found: install it with `apt-get install wrk` (Debian/Ubuntu) or `brew install wrk` (macOS)"

# Each wrk thread builds the request once, and done() prints one JSON line that run_wrk parses.
_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
{headers}
function done(summary, latency, requests)
  io.write(string.format(
    'BENCH_RESULT {{"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,'
    .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout))
end
"""


@dataclass
class LoadResult:
    """Outcome of one closed-loop run."""

    generator: str
    concurrency: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def find_wrk() -> str | None:
    """Return the path of wrk, or None."""
    return shutil.which("wrk")


def wrk_version(wrk: str) -> str:
    output = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
    return (output.stdout + output.stderr).splitlines()[0].strip() if (output.stdout + output.stderr) else "unknown"


def run_wrk(
    wrk: str,
    port: int,
    path: str,
    headers: dict[str, str],
    body: bytes,
    concurrency: int,
    duration_s: float,
) -> LoadResult:
    """Run wrk with a POST body against 127.0.0.1:port{path}; raise RuntimeError if wrk fails."""
    header_lines = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items())
    script = _WRK_SCRIPT.format(body=body.decode(), headers=header_lines)
    threads = 1 if concurrency == 1 else 2
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-") as script_file:
        script_file.write(script)
        script_file.flush()
        # wrk takes durations in whole seconds, minutes or hours only.
        argv = [
            wrk,
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{max(1, round(duration_s))}s",
            "--timeout",
            "10s",
            "-s",
            script_file.name,
            f"http://127.0.0.1:{port}{path}",
        ]
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    match = re.search(r"^BENCH_RESULT (\{.*\})$", completed.stdout, re.M)
    if completed.returncode != 0 or match is None:
        raise RuntimeError(
            f"wrk failed (exit {completed.returncode}) against port {port}: {completed.stderr.strip() or completed.stdout.strip()}"
        )
    data = json.loads(match.group(1))
    duration = data["duration_us"] / 1e6
    requests = int(data["requests"])
    has_latency = requests > 0
    errors = {name: int(data[name]) for name in ("connect", "read", "write", "status", "timeout") if data[name]}
    return LoadResult(
        generator="wrk",
        concurrency=concurrency,
        requests=requests,
        duration_s=round(duration, 3),
        rps=round(requests / duration, 1) if duration else 0.0,
        p50_ms=data["p50_us"] / 1000 if has_latency else None,
        p90_ms=data["p90_us"] / 1000 if has_latency else None,
        p99_ms=data["p99_us"] / 1000 if has_latency else None,
        max_ms=data["max_us"] / 1000 if has_latency else None,
        errors=errors,
    )


class _LoadConnection(asyncio.Protocol):
    """One keep-alive connection that sends the next request as soon as the previous response ends."""

    def __init__(self, request: bytes, deadline: float, latencies: list[float], errors: dict[str, int]) -> None:
        self.request = request
        self.deadline = deadline
        self.latencies = latencies
        self.errors = errors
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0
        self.parser = ResponseParser(lambda _body: None, self._complete)
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
        except ProtocolError:
            self.errors["read"] = self.errors.get("read", 0) + 1
            self._finish()

    def _complete(self, head: ResponseHead) -> None:
        now = time.perf_counter()
        self.latencies.append(now - self.sent_at)
        if head.status >= 400:
            self.errors["status"] = self.errors.get("status", 0) + 1
        if now >= self.deadline:
            self._finish()
        else:
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.errors["read"] = self.errors.get("read", 0) + 1
            self.finished.set_result(None)

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)
        if self.transport is not None:
            self.transport.close()


async def run_asyncio_load(
    port: int,
    path: str,
    headers: dict[str, str],
    body: bytes,
    concurrency: int,
    duration_s: float,
) -> LoadResult:
    """Run the built-in closed-loop generator (one process, one core) against 127.0.0.1:port{path}."""
    loop = asyncio.get_running_loop()
    request = build_request(path, body, headers)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    started = time.perf_counter()
    deadline = started + duration_s
    connections: list[_LoadConnection] = []
    for _ in range(concurrency):
        try:
            _transport, protocol = await loop.create_connection(
                lambda: _LoadConnection(request, deadline, latencies, errors), "127.0.0.1", port
            )
            connections.append(protocol)
        except OSError:
            errors["connect"] = errors.get("connect", 0) + 1
    try:
        await asyncio.wait_for(
            asyncio.gather(*(connection.finished for connection in connections)), timeout=duration_s + 15
        )
    except TimeoutError:
        errors["timeout"] = errors.get("timeout", 0) + sum(1 for c in connections if not c.finished.done())
        for connection in connections:
            connection._finish()
    elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(fraction: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000, 3)

    return LoadResult(
        generator="asyncio",
        concurrency=concurrency,
        requests=len(latencies),
        duration_s=round(elapsed, 3),
        rps=round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        p50_ms=percentile(0.50),
        p90_ms=percentile(0.90),
        p99_ms=percentile(0.99),
        max_ms=round(latencies[-1] * 1000, 3) if latencies else None,
        errors=errors,
    )


class LoadGenerator:
    """Front end that picks wrk when it is installed and the asyncio generator otherwise."""

    def __init__(self, prefer_wrk: bool = True) -> None:
        self.wrk = find_wrk() if prefer_wrk else None
        if prefer_wrk and self.wrk is None:
            logger.warning("%s; falling back to the built-in asyncio generator (lower ceiling)", WRK_INSTALL_HINT)

    @property
    def name(self) -> str:
        return "wrk" if self.wrk else "asyncio"

    def describe(self) -> str:
        if self.wrk:
            version = wrk_version(self.wrk).split(" Copyright")[0]
            return f"{version} ({self.wrk}), 1 thread at c=1, 2 threads otherwise"
        return "built-in asyncio generator (bench/load.py, one process)"

    def run(
        self, port: int, path: str, headers: dict[str, str], body: bytes, concurrency: int, duration_s: float
    ) -> LoadResult:
        if self.wrk:
            return run_wrk(self.wrk, port, path, headers, body, concurrency, duration_s)
        return asyncio.run(run_asyncio_load(port, path, headers, body, concurrency, duration_s))


def write_wrk_script_example(path: Path, headers: dict[str, str], body: bytes) -> None:
    """Write the Lua script that run_wrk uses, so a reader can rerun one measurement by hand."""
    header_lines = "\n".join(f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items())
    path.write_text(_WRK_SCRIPT.format(body=body.decode(), headers=header_lines))
