"""Run one benchmark: start the fake upstream and the targets, measure them in turn, stop everything.

Within each repetition every scenario visits the targets in a rotated order, so slow drift of
the machine spreads over all targets, and ratios come from measurements a few seconds apart.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from bench.httpclient import chat_body
from bench.load import LoadGenerator
from bench.sse import hold_streams, measure_relay, percentile
from bench.targets import HOLD, JSON, RELAY, SSE, Target

logger = logging.getLogger(__name__)

SSE_EVENTS = 50
# Content events carry a timestamp; the final usage event and `data: [DONE]` do not.
STAMPED_EVENTS = SSE_EVENTS - 2
# A load run during which other processes used more cores than this is measured again (full runs).
DISTURBED_OTHER_CPU = 0.25


@dataclass
class Plan:
    """Sizes of one run. `full()` is the published run, `quick()` the CI smoke run."""

    mode: str
    reps: int
    duration_s: float
    warmup_s: float
    json_concurrency: list[int]
    sse_concurrency: list[int]
    relay_concurrency: list[int]
    relay_streams_per_connection: int
    relay_gap_us: int
    hold_streams: int
    hold_gap_us: int
    hold_ramp_s: float
    hold_rounds: int
    settle_s: float
    disturbed_retries: int

    @classmethod
    def full(cls) -> Plan:
        return cls(
            mode="full",
            reps=3,
            duration_s=5,
            warmup_s=2,
            json_concurrency=[1, 8, 64],
            sse_concurrency=[1, 8, 64],
            relay_concurrency=[1, 8],
            relay_streams_per_connection=20,
            relay_gap_us=2000,
            hold_streams=1000,
            hold_gap_us=200_000,
            hold_ramp_s=3.0,
            hold_rounds=2,
            settle_s=3.0,
            disturbed_retries=2,
        )

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            mode="quick",
            reps=1,
            duration_s=1,
            warmup_s=0.5,
            json_concurrency=[1, 8],
            sse_concurrency=[8],
            relay_concurrency=[1],
            relay_streams_per_connection=8,
            relay_gap_us=1000,
            hold_streams=100,
            hold_gap_us=20_000,
            hold_ramp_s=0.5,
            hold_rounds=1,
            settle_s=1.0,
            disturbed_retries=0,
        )

    @property
    def hold_stream_seconds(self) -> float:
        return STAMPED_EVENTS * self.hold_gap_us / 1e6


@dataclass
class RunData:
    """Everything measured in one run, before aggregation."""

    ceiling: dict[str, object] = field(default_factory=dict)
    throughput: list[dict[str, object]] = field(default_factory=list)
    relay: list[dict[str, object]] = field(default_factory=list)
    hold: list[dict[str, object]] = field(default_factory=list)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    upstream_stats: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class FakeUpstream:
    """The fake upstream in its own process (python -m bench.upstream)."""

    def __init__(self, work_dir: Path, repo: Path) -> None:
        self.port = procs.free_port()
        self.process = procs.ManagedProcess(
            "upstream",
            [sys.executable, "-m", "bench.upstream", "--port", str(self.port)],
            work_dir / "upstream.log",
            cwd=repo,
        )

    def start(self) -> None:
        self.process.start()
        procs.wait_for_http(self.port, "/healthz", 15, self.process.proc)

    def stop(self) -> None:
        self.process.stop()


def machine_busy_cores(seconds: float = 1.0) -> float:
    """Return how many cores the machine kept busy over `seconds` (run before starting anything)."""
    before = procs.system_busy_seconds() - procs.own_cpu_seconds()
    time.sleep(seconds)
    return round((procs.system_busy_seconds() - procs.own_cpu_seconds() - before) / seconds, 2)


def wait_until_quiet(max_wait_s: float, threshold_cores: float = 0.2) -> float:
    """Wait up to max_wait_s until other processes keep fewer than threshold_cores busy; return the last reading."""
    deadline = time.monotonic() + max_wait_s
    busy = machine_busy_cores()
    while busy > threshold_cores and time.monotonic() < deadline:
        logger.info("waiting for the machine to become quiet: %.2f cores busy with other processes", busy)
        time.sleep(4)
        busy = machine_busy_cores()
    return busy


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


class Runner:
    """Measures a list of started targets according to a Plan."""

    def __init__(self, plan: Plan, loadgen: LoadGenerator, targets: list[Target], upstream: FakeUpstream) -> None:
        self.plan = plan
        self.loadgen = loadgen
        self.targets = targets
        self.upstream = upstream
        self.data = RunData()

    def _bodies(self) -> dict[str, bytes]:
        return {JSON: chat_body(stream=False), SSE: chat_body(stream=True, events=SSE_EVENTS, gap_us=0)}

    def measure_ceiling(self, direct: Target) -> None:
        """Measure the fake upstream together with the load generator, before any proxy runs."""
        bodies = self._bodies()
        concurrency = max(self.plan.json_concurrency)
        results = {}
        for scenario in (JSON, SSE):
            result = self.loadgen.run(direct.port, direct.path, direct.headers, bodies[scenario], concurrency, self.plan.duration_s)
            results[scenario] = result
        self.data.ceiling = {
            "generator": self.loadgen.name,
            "concurrency": concurrency,
            "json_rps": results[JSON].rps,
            "sse_streams_per_s": results[SSE].rps,
            "upstream_cpu_note": "fake upstream and load generator share the same 2 cores with the target",
        }
        logger.info(
            "fake upstream ceiling with %s at c=%d: %.0f req/s (1 KiB JSON), %.0f streams/s (50-event SSE)",
            self.loadgen.name,
            concurrency,
            results[JSON].rps,
            results[SSE].rps,
        )

    def warm_up(self) -> None:
        bodies = self._bodies()
        for target in self.targets:
            for scenario in (JSON, SSE):
                if scenario in target.scenarios:
                    self.loadgen.run(target.port, target.path, target.headers, bodies[scenario], 8, self.plan.warmup_s)

    def run_throughput(self, rep: int) -> None:
        bodies = self._bodies()
        for scenario, concurrencies in ((JSON, self.plan.json_concurrency), (SSE, self.plan.sse_concurrency)):
            eligible = [target for target in self.targets if scenario in target.scenarios]
            for concurrency in concurrencies:
                shift = rep % len(eligible) if eligible else 0
                for target in eligible[shift:] + eligible[:shift]:
                    self._measure_one(rep, scenario, concurrency, target, bodies[scenario])

    def _measure_one(self, rep: int, scenario: str, concurrency: int, target: Target, body: bytes) -> None:
        """Measure one target; repeat a measurement that other processes disturbed, keeping the least disturbed."""
        best: dict[str, object] | None = None
        for attempt in range(1 + self.plan.disturbed_retries):
            row = self._load_once(rep, scenario, concurrency, target, body)
            if row is None:
                return
            row["attempt"] = attempt
            if best is None or row["other_cpu_share"] < best["other_cpu_share"]:
                best = row
            if row["other_cpu_share"] <= DISTURBED_OTHER_CPU or attempt == self.plan.disturbed_retries:
                break
            logger.info("%s %s c=%d: other processes used %.2f cores, measuring again", target.name, scenario, concurrency, row["other_cpu_share"])
            time.sleep(2)
        assert best is not None
        self.data.throughput.append(best)
        errors = best["errors"]
        assert isinstance(errors, dict)
        if best["requests"] == 0:
            self.data.problems.append(f"{target.name} {scenario} c={concurrency}: no request completed ({errors})")
        elif errors:
            logger.warning("%s %s c=%d: %d errors %s", target.name, scenario, concurrency, sum(errors.values()), errors)
        logger.info(
            "rep %d %-4s c=%-2d %-18s %8.0f req/s  p50 %7.3f ms  p99 %7.3f ms  other CPU %.2f%s",
            rep,
            scenario,
            concurrency,
            target.name,
            best["rps"],
            best["p50_ms"] or 0,
            best["p99_ms"] or 0,
            best["other_cpu_share"],
            f"  errors {errors}" if errors else "",
        )

    def _load_once(self, rep: int, scenario: str, concurrency: int, target: Target, body: bytes) -> dict[str, object] | None:
        pids = target.pids()
        upstream_pids = self.upstream.process.pids()
        cpu_before = procs.cpu_seconds(pids)
        known_before = cpu_before + procs.cpu_seconds(upstream_pids) + procs.own_cpu_seconds()
        busy_before = procs.system_busy_seconds()
        try:
            result = self.loadgen.run(target.port, target.path, target.headers, body, concurrency, self.plan.duration_s)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            logger.error("%s %s c=%d failed: %s", target.name, scenario, concurrency, error)
            self.data.problems.append(f"{target.name} {scenario} c={concurrency}: {error}")
            return None
        cpu_after = procs.cpu_seconds(pids)
        known_used = cpu_after + procs.cpu_seconds(upstream_pids) + procs.own_cpu_seconds() - known_before
        other_used = procs.system_busy_seconds() - busy_before - known_used
        cpu_used = cpu_after - cpu_before

        row: dict[str, object] = {"rep": rep, "scenario": scenario, "target": target.name, **result.as_dict()}
        row["cpu_s"] = round(cpu_used, 3) if pids else None
        row["cpu_us_per_request"] = round(cpu_used * 1e6 / result.requests, 1) if pids and result.requests else None
        # Cores used by processes outside this benchmark (other work on the machine) during the run.
        row["other_cpu_share"] = round(max(0.0, other_used) / result.duration_s, 3) if result.duration_s else 0.0
        return row

    def run_relay(self, rep: int) -> None:
        body = chat_body(stream=True, events=SSE_EVENTS, gap_us=self.plan.relay_gap_us)
        eligible = [target for target in self.targets if RELAY in target.scenarios]
        shift = rep % len(eligible) if eligible else 0
        for target in eligible[shift:] + eligible[:shift]:
            for concurrency in self.plan.relay_concurrency:
                streams = concurrency * self.plan.relay_streams_per_connection
                result = asyncio.run(
                    measure_relay(target.port, target.path, target.headers, body, STAMPED_EVENTS, streams, concurrency)
                )
                row = {
                    "rep": rep,
                    "target": target.name,
                    "concurrency": concurrency,
                    "gap_us": self.plan.relay_gap_us,
                    "streams": result.streams,
                    "complete": result.complete,
                    "events": result.events,
                    "expected_events": result.expected_events,
                    "ttfe_p50_ms": percentile(result.ttfe_ms, 0.5),
                    "ttfe_p99_ms": percentile(result.ttfe_ms, 0.99),
                    "delay_p50_ms": percentile(result.delay_ms, 0.5),
                    "delay_p99_ms": percentile(result.delay_ms, 0.99),
                    "delay_max_ms": result.delay_ms[-1] if result.delay_ms else None,
                    "streams_per_s": result.streams_per_s,
                    "errors": result.errors,
                }
                self.data.relay.append(row)
                if result.failed:
                    logger.warning("%s relay c=%d: %d of %d streams incomplete %s", target.name, concurrency, result.failed, streams, result.errors)
                logger.info(
                    "rep %d relay c=%-2d %-18s ttfe p50 %6.3f ms  event delay p50 %6.3f p99 %6.3f ms  (%d/%d events)",
                    rep,
                    concurrency,
                    target.name,
                    row["ttfe_p50_ms"] or 0,
                    row["delay_p50_ms"] or 0,
                    row["delay_p99_ms"] or 0,
                    result.events,
                    result.expected_events,
                )

    def run_hold(self) -> None:
        for target in self.targets:
            if HOLD in target.scenarios and target.process is not None:
                self._hold_one(target)

    def _hold_one(self, target: Target) -> None:
        """Hold the streams `hold_rounds` times on one process; a second round shows whether memory is reused."""
        plan = self.plan
        time.sleep(plan.settle_s)
        baseline = procs.rss_kib(target.pids())
        rounds = [self._hold_round(target) for _ in range(plan.hold_rounds)]
        first = rounds[0]
        row = {
            "target": target.name,
            "streams": first["streams"],
            "complete": first["complete"],
            "failed": first["failed"],
            "max_open": first["max_open"],
            "stream_seconds": plan.hold_stream_seconds,
            "rss_base_mib": _mib(baseline),
            "rss_all_open_mib": first["rss_all_open_mib"],
            "rss_peak_mib": first["rss_peak_mib"],
            "rss_after_mib": first["rss_after_mib"],
            "after_vs_base": round(first["rss_after_kib"] / baseline, 3) if baseline else None,
            "kib_per_stream": round((first["rss_peak_kib"] - baseline) / first["streams"], 1) if first["streams"] else None,
            "errors": first["errors"],
            "wall_s": first["wall_s"],
            "later_rounds": [
                {key: value for key, value in later.items() if not key.endswith("_kib")} for later in rounds[1:]
            ],
        }
        self.data.hold.append(row)
        logger.info(
            "hold %-18s %d/%d streams complete, max open %d, RSS base %.1f -> peak %.1f -> after %.1f MiB%s",
            target.name,
            first["complete"],
            first["streams"],
            first["max_open"],
            row["rss_base_mib"],
            row["rss_peak_mib"],
            row["rss_after_mib"],
            "".join(f"; next round peak {later['rss_peak_mib']} -> after {later['rss_after_mib']} MiB" for later in rounds[1:]),
        )

    def _hold_round(self, target: Target) -> dict[str, object]:
        plan = self.plan
        body = chat_body(stream=True, events=SSE_EVENTS, gap_us=plan.hold_gap_us)
        samples: list[int] = []
        at_all_open: list[int] = []

        def sample_all_open() -> None:
            at_all_open.append(procs.rss_kib(target.pids()))

        async def sampled_hold():  # type: ignore[no-untyped-def]
            async def sampler() -> None:
                while True:
                    samples.append(procs.rss_kib(target.pids()))
                    await asyncio.sleep(0.25)

            sampling = asyncio.ensure_future(sampler())
            try:
                return await hold_streams(
                    target.port,
                    target.path,
                    target.headers,
                    body,
                    plan.hold_streams,
                    plan.hold_ramp_s,
                    sample_all_open,
                    timeout_s=plan.hold_ramp_s + plan.hold_stream_seconds * 3 + 30,
                )
            finally:
                sampling.cancel()

        result = asyncio.run(sampled_hold())
        time.sleep(plan.settle_s)
        after = procs.rss_kib(target.pids())
        peak = max(samples + at_all_open + [after])
        return {
            "streams": result.streams,
            "complete": result.complete,
            "failed": result.failed,
            "max_open": result.max_open,
            "rss_all_open_mib": _mib(at_all_open[0]) if at_all_open else None,
            "rss_peak_mib": _mib(peak),
            "rss_after_mib": _mib(after),
            "rss_peak_kib": peak,
            "rss_after_kib": after,
            "errors": result.errors,
            "wall_s": result.wall_s,
        }

    def record_upstream_stats(self) -> None:
        """Store the fake upstream's request counters (requests per account show the routing spread)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.upstream.port, timeout=5)
        try:
            connection.request("GET", "/__bench/stats")
            self.data.upstream_stats = json.loads(connection.getresponse().read())
        except (OSError, ValueError) as error:
            logger.error("reading the fake upstream's counters failed: %s", error)
        finally:
            connection.close()

    def record_memory(self, when: str) -> None:
        for target in self.targets:
            pids = target.pids()
            if not pids:
                continue
            entry = self.data.memory.setdefault(target.name, {})
            entry[f"rss_{when}_mib"] = _mib(procs.rss_kib(pids))
            entry["peak_rss_mib"] = _mib(procs.peak_rss_kib(pids))
            entry["processes"] = len(pids)
