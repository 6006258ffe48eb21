"""Aggregate a run (medians over repetitions, ratios per repetition), judge the goals, write the pages.

Ratios and added latencies are computed within each repetition (target and reference measured
a few seconds apart) and then the median over repetitions is taken.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Iterable
from pathlib import Path

from bench.machine import machine_line

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CLIPROXY_TARGETS = ("cliproxy-run", "cliproxy-mitmdump")
BARE_REFERENCE = {"json": "mitm-bare", "sse": "mitm-bare-stream"}

# The published goals for cliproxy with every feature on.
GOAL_BARE_RATIO = 1.0
GOAL_LITELLM_RATIO_C64 = 6.0
GOAL_ADDED_P50_MS = 1.5
GOAL_RELAY_P99_MS = 1.0
GOAL_HOLD_STREAMS = 1000
GOAL_HOLD_RSS_MIB = 300.0
GOAL_AFTER_RATIO = 1.10
# Share of a core used by processes outside the benchmark above which a run is flagged as disturbed.
BUSY_OTHER_CPU = 0.1


def median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _rows(data: dict, kind: str, **match: object) -> list[dict]:
    return [row for row in data[kind] if all(row.get(key) == value for key, value in match.items())]


def _per_rep_ratio(rows: list[dict], reference: list[dict], key: str) -> float | None:
    by_rep = {row["rep"]: row for row in reference}
    ratios = [row[key] / by_rep[row["rep"]][key] for row in rows if row["rep"] in by_rep and by_rep[row["rep"]][key]]
    return median(ratios)


def _per_rep_delta(rows: list[dict], reference: list[dict], key: str) -> float | None:
    by_rep = {row["rep"]: row for row in reference}
    deltas = [
        row[key] - by_rep[row["rep"]][key]
        for row in rows
        if row["rep"] in by_rep and row[key] is not None and by_rep[row["rep"]][key] is not None
    ]
    return median(deltas)


def aggregate(data: dict) -> dict:
    """Return medians per target, scenario and concurrency, with ratios to direct, bare mitmdump and LiteLLM."""
    summary: dict = {"throughput": {}, "relay": {}, "hold": {}, "memory": data.get("memory", {})}
    for scenario in ("json", "sse"):
        table: dict = {}
        concurrencies = sorted({row["concurrency"] for row in _rows(data, "throughput", scenario=scenario)})
        targets = list(dict.fromkeys(row["target"] for row in _rows(data, "throughput", scenario=scenario)))
        for concurrency in concurrencies:
            direct = _rows(data, "throughput", scenario=scenario, concurrency=concurrency, target="direct")
            bare = _rows(data, "throughput", scenario=scenario, concurrency=concurrency, target=BARE_REFERENCE[scenario])
            litellm = _rows(data, "throughput", scenario=scenario, concurrency=concurrency, target="litellm")
            for target in targets:
                rows = _rows(data, "throughput", scenario=scenario, concurrency=concurrency, target=target)
                if not rows:
                    continue
                entry = {
                    "rps": median(row["rps"] for row in rows),
                    "p50_ms": median(row["p50_ms"] for row in rows),
                    "p99_ms": median(row["p99_ms"] for row in rows),
                    "cpu_us_per_request": median(row["cpu_us_per_request"] for row in rows),
                    "errors": sum(sum(row["errors"].values()) for row in rows),
                    "other_cpu_share": median(row.get("other_cpu_share") for row in rows),
                    "reps": len(rows),
                    "x_direct": _per_rep_ratio(rows, direct, "rps"),
                    "x_bare": _per_rep_ratio(rows, bare, "rps") if bare else None,
                    "x_litellm": _per_rep_ratio(rows, litellm, "rps") if litellm and target != "litellm" else None,
                    "added_p50_ms": _per_rep_delta(rows, direct, "p50_ms") if target != "direct" else None,
                    "added_p99_ms": _per_rep_delta(rows, direct, "p99_ms") if target != "direct" else None,
                }
                table.setdefault(target, {})[str(concurrency)] = entry
        summary["throughput"][scenario] = table
    concurrencies = sorted({row["concurrency"] for row in data["relay"]})
    for concurrency in concurrencies:
        direct = _rows(data, "relay", concurrency=concurrency, target="direct")
        for target in dict.fromkeys(row["target"] for row in data["relay"]):
            rows = _rows(data, "relay", concurrency=concurrency, target=target)
            if not rows:
                continue
            summary["relay"].setdefault(target, {})[str(concurrency)] = {
                "ttfe_p50_ms": median(row["ttfe_p50_ms"] for row in rows),
                "added_ttfe_p50_ms": _per_rep_delta(rows, direct, "ttfe_p50_ms") if target != "direct" else None,
                "delay_p50_ms": median(row["delay_p50_ms"] for row in rows),
                "delay_p99_ms": median(row["delay_p99_ms"] for row in rows),
                "added_delay_p99_ms": _per_rep_delta(rows, direct, "delay_p99_ms") if target != "direct" else None,
                "delay_max_ms": max((row["delay_max_ms"] or 0) for row in rows),
                "streams_per_s": median(row["streams_per_s"] for row in rows),
                "incomplete_streams": sum(row["streams"] - row["complete"] for row in rows),
                "missing_events": sum(row["expected_events"] - row["events"] for row in rows),
            }
    for row in data["hold"]:
        summary["hold"][row["target"]] = row
    return summary


def _goal(name: str, measured: str, met: bool | None, explanation: str = "") -> dict:
    return {"goal": name, "measured": measured, "met": met, "explanation": explanation}


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"


def _throughput_explanation(entry: dict, bare: dict) -> str:
    """Explain a throughput shortfall against bare mitmdump from CPU per request and outside load."""
    own_cpu = entry["cpu_us_per_request"]
    bare_cpu = bare["cpu_us_per_request"]
    if not own_cpu or not bare_cpu:
        return ""
    if own_cpu > bare_cpu:
        return (
            f"cliproxy used {own_cpu:,.0f} µs of CPU per request against {bare_cpu:,.0f} µs for bare mitmdump. "
            "One event loop on one core caps throughput near 1 s / (CPU per request)."
        )
    return (
        f"cliproxy used no more CPU per request than bare mitmdump ({own_cpu:,.0f} against {bare_cpu:,.0f} µs), "
        f"so its own work is not the cause. Other processes used {_fmt(entry.get('other_cpu_share'))} cores during "
        f"its measurement and {_fmt(bare.get('other_cpu_share'))} during bare mitmdump's."
    )


def _judge_bare_ratio(summary: dict, target: str) -> list[dict]:
    json_table = summary["throughput"].get("json", {})
    entries = json_table.get(target, {})
    bare_entries = json_table.get("mitm-bare", {})
    goals = []
    for concurrency in ("1", "8", "64"):
        entry = entries.get(concurrency)
        ratio = entry["x_bare"] if entry else None
        explanation = ""
        if entry and ratio is not None and ratio < GOAL_BARE_RATIO and concurrency in bare_entries:
            explanation = _throughput_explanation(entry, bare_entries[concurrency])
        own_rps = _fmt(entry["rps"] if entry else None, 0)
        bare_rps = _fmt(bare_entries.get(concurrency, {}).get("rps"), 0)
        goals.append(
            _goal(
                f"JSON req/s >= {GOAL_BARE_RATIO:.1f}x bare mitmdump at c={concurrency}",
                "n/a" if ratio is None else f"{_fmt(ratio)}x ({own_rps} vs {bare_rps} req/s)",
                None if ratio is None else ratio >= GOAL_BARE_RATIO,
                explanation,
            )
        )
    return goals


def _judge_litellm_ratio(summary: dict, target: str) -> dict:
    json_table = summary["throughput"].get("json", {})
    entry = json_table.get(target, {}).get("64")
    ratio = entry["x_litellm"] if entry else None
    explanation = ""
    if ratio is not None and ratio < GOAL_LITELLM_RATIO_C64:
        litellm_rps = json_table.get("litellm", {}).get("64", {}).get("rps")
        bare = json_table.get("mitm-bare", {}).get("64", {})
        explanation = f"LiteLLM reached {_fmt(litellm_rps, 0)} req/s, so the goal needs {_fmt((litellm_rps or 0) * GOAL_LITELLM_RATIO_C64, 0)} req/s."
        if bare.get("x_litellm") is not None:
            explanation += f" Bare mitmdump reached {_fmt(bare['rps'], 0)} req/s ({bare['x_litellm']:.2f}x LiteLLM) in the same run."
    return _goal(
        f"JSON req/s >= {GOAL_LITELLM_RATIO_C64:.0f}x LiteLLM at c=64",
        f"{_fmt(ratio)}x" if ratio is not None else "n/a (LiteLLM not measured)",
        None if ratio is None else ratio >= GOAL_LITELLM_RATIO_C64,
        explanation,
    )


def _judge_added_latency(summary: dict, target: str) -> dict:
    json_table = summary["throughput"].get("json", {})
    entry = json_table.get(target, {}).get("1")
    added = entry["added_p50_ms"] if entry else None
    explanation = ""
    bare_added = json_table.get("mitm-bare", {}).get("1", {}).get("added_p50_ms")
    if added is not None and added > GOAL_ADDED_P50_MS and bare_added is not None:
        explanation = f"Bare mitmdump adds +{bare_added:.3f} ms in the same run, so cliproxy's own share is {added - bare_added:+.3f} ms."
    return _goal(
        f"added p50 latency at c=1 <= {GOAL_ADDED_P50_MS} ms over direct",
        f"+{_fmt(added, 3)} ms" if added is not None else "n/a",
        None if added is None else added <= GOAL_ADDED_P50_MS,
        explanation,
    )


def _judge_relay(summary: dict, target: str) -> dict:
    relay = summary["relay"].get(target, {}).get("1")
    delay = relay["delay_p99_ms"] if relay else None
    direct_delay = summary["relay"].get("direct", {}).get("1", {}).get("delay_p99_ms")
    bare_delay = summary["relay"].get("mitm-bare-stream", {}).get("1", {}).get("delay_p99_ms")
    explanation = ""
    if delay is not None and delay > GOAL_RELAY_P99_MS:
        explanation = f"Bare mitmdump with streaming had p99 {_fmt(bare_delay, 3)} ms in the same run."
        if direct_delay is not None and direct_delay > GOAL_RELAY_P99_MS:
            explanation += " Even the direct path exceeded 1 ms, so scheduling delays on the shared cores dominate this tail."
    return _goal(
        f"SSE relay delay per event p99 <= {GOAL_RELAY_P99_MS} ms (c=1)",
        f"{_fmt(delay, 3)} ms (direct {_fmt(direct_delay, 3)} ms)",
        None if delay is None else delay <= GOAL_RELAY_P99_MS,
        explanation,
    )


def _judge_hold(summary: dict, target: str) -> list[dict]:
    hold = summary["hold"].get(target)
    rss_goal = f"{GOAL_HOLD_STREAMS} concurrent streams under {GOAL_HOLD_RSS_MIB:.0f} MiB RSS"
    after_goal = f"RSS within {GOAL_AFTER_RATIO - 1:.0%} of baseline after they close"
    if hold is None or hold["streams"] < GOAL_HOLD_STREAMS:
        streams = hold["streams"] if hold else 0
        return [_goal(rss_goal, f"n/a (held {streams})", None), _goal(after_goal, "n/a", None)]

    all_open = hold["max_open"] >= hold["streams"] and hold["complete"] == hold["streams"]
    rss = _goal(
        rss_goal,
        f"peak {hold['rss_peak_mib']} MiB, {hold['complete']}/{hold['streams']} complete, max open {hold['max_open']}",
        all_open and hold["rss_peak_mib"] < GOAL_HOLD_RSS_MIB,
        "" if all_open else "not every stream was open at once or completed",
    )
    ratio = hold["after_vs_base"]
    explanation = ""
    if ratio is not None and ratio > GOAL_AFTER_RATIO:
        explanation = _retained_memory_explanation(summary, hold)
    after = _goal(
        after_goal,
        f"{hold['rss_base_mib']} -> {hold['rss_after_mib']} MiB ({_fmt(ratio, 3)}x)",
        None if ratio is None else ratio <= GOAL_AFTER_RATIO,
        explanation,
    )
    return [rss, after]


def _retained_memory_explanation(summary: dict, hold: dict) -> str:
    """Explain RSS that stayed up after the streams closed, from the bare baseline and the repeated round."""
    parts = []
    bare = summary["hold"].get("mitm-bare-stream")
    if bare and bare["after_vs_base"] is not None:
        bare_kept = f"Bare mitmdump went {bare['rss_base_mib']} -> {bare['rss_after_mib']} MiB ({bare['after_vs_base']:.2f}x) in the same test"
        if bare["after_vs_base"] > GOAL_AFTER_RATIO:
            parts.append(bare_kept + ", so most of the retained memory is mitmproxy's and CPython's, not cliproxy state.")
        else:
            parts.append(bare_kept + ", so the retained memory is cliproxy's own.")
    later = hold.get("later_rounds") or []
    if later:
        second = later[0]
        grew = second["rss_peak_mib"] - hold["rss_peak_mib"]
        verdict = "reused, not leaked" if grew <= 0.05 * hold["rss_peak_mib"] else "still growing: possible leak"
        parts.append(
            f"A second round of {hold['streams']} streams peaked at {second['rss_peak_mib']} MiB "
            f"({grew:+.1f} MiB against the first), so the memory is {verdict}."
        )
    return " ".join(parts)


def judge(summary: dict, target: str) -> list[dict]:
    """Compare one cliproxy target with the goals; `met` is None where the run did not measure it."""
    return [
        *_judge_bare_ratio(summary, target),
        _judge_litellm_ratio(summary, target),
        _judge_added_latency(summary, target),
        _judge_relay(summary, target),
        *_judge_hold(summary, target),
    ]


def build_document(meta: dict, data: dict) -> dict:
    summary = aggregate(data)
    judged = meta["mode"] == "full"
    goals = {target: judge(summary, target) for target in CLIPROXY_TARGETS if target in summary["throughput"].get("json", {})}
    if not judged:
        for target_goals in goals.values():
            for goal in target_goals:
                goal["met"] = None
                goal["explanation"] = "not judged in --quick mode"
    return {"schema": SCHEMA_VERSION, **meta, "summary": summary, "goals": goals, "raw": data}


def _met_text(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "not judged"}[met]


def _throughput_table(document: dict, scenario: str) -> list[str]:
    table = document["summary"]["throughput"].get(scenario, {})
    unit = "req/s" if scenario == "json" else "streams/s"
    bare = BARE_REFERENCE[scenario]
    lines = [
        f"| c | target | {unit} | x direct | x {bare} | x litellm | p50 ms | +p50 vs direct | p99 ms | CPU µs/req | other CPU | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    concurrencies = sorted({int(c) for entries in table.values() for c in entries})
    for concurrency in concurrencies:
        for target, entries in table.items():
            entry = entries.get(str(concurrency))
            if entry is None:
                continue
            lines.append(
                f"| {concurrency} | {target} | {_fmt(entry['rps'], 0)} | {_fmt(entry['x_direct'], 3)} | "
                f"{_fmt(entry['x_bare'])} | {_fmt(entry['x_litellm'])} | {_fmt(entry['p50_ms'], 3)} | "
                f"{'' if entry['added_p50_ms'] is None else _fmt(entry['added_p50_ms'], 3)} | {_fmt(entry['p99_ms'], 3)} | "
                f"{_fmt(entry['cpu_us_per_request'], 0)} | {_fmt(entry['other_cpu_share'])} | {entry['errors'] or ''} |"
            )
    return lines


def _relay_table(document: dict) -> list[str]:
    lines = [
        "| c | target | first event p50 ms | added vs direct | event delay p50 ms | p99 ms | max ms | streams/s | incomplete | missing events |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    relay = document["summary"]["relay"]
    concurrencies = sorted({int(c) for entries in relay.values() for c in entries})
    for concurrency in concurrencies:
        for target, entries in relay.items():
            entry = entries.get(str(concurrency))
            if entry is None:
                continue
            lines.append(
                f"| {concurrency} | {target} | {_fmt(entry['ttfe_p50_ms'], 3)} | "
                f"{'' if entry['added_ttfe_p50_ms'] is None else _fmt(entry['added_ttfe_p50_ms'], 3)} | "
                f"{_fmt(entry['delay_p50_ms'], 3)} | {_fmt(entry['delay_p99_ms'], 3)} | {_fmt(entry['delay_max_ms'], 2)} | "
                f"{_fmt(entry['streams_per_s'], 1)} | {entry['incomplete_streams'] or ''} | {entry['missing_events'] or ''} |"
            )
    return lines


def _hold_table(document: dict) -> list[str]:
    lines = [
        "| target | streams | complete | max open | RSS before MiB | all open MiB | peak MiB | after close MiB | after / before "
        "| KiB per stream | next round peak / after MiB | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for target, row in document["summary"]["hold"].items():
        errors = ", ".join(f"{name}: {count}" for name, count in row["errors"].items())
        later = " ; ".join(f"{entry['rss_peak_mib']} / {entry['rss_after_mib']}" for entry in row.get("later_rounds", []))
        lines.append(
            f"| {target} | {row['streams']} | {row['complete']} | {row['max_open']} | {row['rss_base_mib']} | "
            f"{row['rss_all_open_mib']} | {row['rss_peak_mib']} | {row['rss_after_mib']} | {_fmt(row['after_vs_base'], 3)} | "
            f"{row['kib_per_stream']} | {later or 'n/a'} | {errors} |"
        )
    return lines


def _memory_table(document: dict) -> list[str]:
    lines = ["| target | processes | RSS idle after start MiB | RSS at end MiB | peak RSS MiB (VmHWM) |", "|---|---:|---:|---:|---:|"]
    for target, entry in document["summary"]["memory"].items():
        lines.append(
            f"| {target} | {entry.get('processes', '')} | {entry.get('rss_idle_mib', 'n/a')} | "
            f"{entry.get('rss_end_mib', 'n/a')} | {entry.get('peak_rss_mib', 'n/a')} |"
        )
    return lines


def max_other_cpu(document: dict) -> float:
    shares = [row.get("other_cpu_share") or 0.0 for row in document["raw"]["throughput"]]
    return max(shares, default=0.0)


def _busy_warning(document: dict) -> list[str]:
    lines = [f"* Cores busy with other processes in the second before the run: {document.get('busy_cores_before_start', 'n/a')}."]
    busiest = max_other_cpu(document)
    if busiest > BUSY_OTHER_CPU:
        lines.append(
            f"* **Warning: other processes used up to {busiest:.2f} cores during measurements.** "
            "Rerun on a quiet machine before trusting absolute numbers. Ratios within a repetition are less affected."
        )
    return lines


def _header_section(document: dict) -> list[str]:
    plan = document["plan"]
    ceiling = document["ceiling"]
    quick_note = " in **--quick** mode (a smoke run: its numbers are not judged)." if document["mode"] == "quick" else "."
    lines = [
        "# cliproxy benchmarks",
        "",
        f"Written by `{document['command']}` on {document['date']}{quick_note}",
        "",
        f"* Machine: {machine_line(document['machine'])}.",
        f"* Load generator: {document['loadgen']}.",
        f"* Fake upstream ceiling, measured first with the same load generator at c={ceiling.get('concurrency')}: "
        f"{_fmt(ceiling.get('json_rps'), 0)} req/s for 1 KiB JSON and {_fmt(ceiling.get('sse_streams_per_s'), 0)} streams/s "
        "for 50-event SSE. Every proxy below stays far under it, so neither the fake nor the load generator is the bottleneck.",
        f"* Repetitions: {plan['reps']} x {plan['duration_s']} s per target, scenario and concurrency, targets in rotated order "
        "within each repetition. Tables show medians over repetitions. Ratios and added latencies are medians of per-repetition values.",
        "* Everything runs on 127.0.0.1 and shares the same cores: load generator, fake upstream and proxy. "
        "'other CPU' is the CPU time (in cores) that processes outside the benchmark used during a measurement. "
        "Above about 0.1 the machine was busy and the numbers are low. "
        + (
            f"A full run measures such a disturbed load run again, up to {plan['disturbed_retries']} times, and keeps the least disturbed one."
            if plan.get("disturbed_retries")
            else ""
        ),
        *_busy_warning(document),
        "",
        "Targets:",
        "",
    ]
    for target in document["targets"]:
        status = f" **Not measured: {target['error']}**" if target.get("error") else ""
        lines.append(f"* `{target['name']}`: {target['description']}. Command: `{target['command']}`.{status}")
    return lines + [""]


def _goals_section(document: dict) -> list[str]:
    lines = ["## Goals (cliproxy with every feature on)", ""]
    if not document["goals"]:
        lines += ["No cliproxy target was measured in this run.", ""]
    for target, goals in document["goals"].items():
        lines += [f"### {target}", "", "| goal | measured | result | explanation |", "|---|---|---|---|"]
        for goal in goals:
            lines.append(f"| {goal['goal']} | {goal['measured']} | {_met_text(goal['met'])} | {goal['explanation']} |")
        lines.append("")
    lines += [
        "Where the time goes under load, and why the goals that are not met are out of reach on "
        "mitmproxy: [profile.md](profile.md).",
        "",
    ]
    return lines


def _measurement_sections(document: dict) -> list[str]:
    plan = document["plan"]
    return [
        "## 1 KiB JSON response (keep-alive clients)",
        "",
        "`POST /v1/chat/completions` with `\"stream\": false`. Latency is request sent to last byte received.",
        "",
        *_throughput_table(document, "json"),
        "",
        "## SSE streams of 50 events, written in one burst",
        "",
        "Throughput of whole streams. Latency is request sent to the last event. `mitm-bare-stream` is bare mitmdump "
        "with a 5-line addon that sets `flow.response.stream = True` for `text/event-stream` (buffered SSE would not be comparable).",
        "",
        *_throughput_table(document, "sse"),
        "",
        f"## SSE relay delay per event (events {plan['relay_gap_us']} µs apart)",
        "",
        "The fake upstream puts `time.monotonic_ns()` into each content event just before writing it. The client subtracts "
        "it from its receive time (same CLOCK_MONOTONIC). First event: request sent to first content event received.",
        "",
        *_relay_table(document),
        "",
        f"## {plan['hold_streams']} concurrent SSE streams",
        "",
        f"Each stream has its own connection and lasts about {plan['hold_stream_seconds']:.1f} s (48 content events "
        f"{plan['hold_gap_us'] / 1000:.0f} ms apart), and all are opened within {plan['hold_ramp_s']} s. RSS is the sum over the "
        f"target's process tree. 'After close' is sampled {plan['settle_s']} s after the last stream ended. "
        "With more than one round, the same process then holds the streams again: a next-round peak no higher than "
        "the first means freed memory is reused rather than leaked.",
        "",
        *_hold_table(document),
        "",
        "## Memory over the whole run",
        "",
        *_memory_table(document),
        "",
    ]


def _closing_sections(document: dict) -> list[str]:
    lines: list[str] = []
    by_account = document["raw"].get("upstream_stats", {}).get("by_account", {})
    if by_account:
        counts = ", ".join(f"{account}: {count:,}" for account, count in sorted(by_account.items()) if account != "-")
        lines += [
            "## Routing check",
            "",
            f"Requests the fake upstream received per cliproxy account (both cliproxy targets together): {counts or 'none'}. "
            "Requests from the other targets carry no account prefix and are not counted here.",
            "",
        ]
    if document["problems"]:
        lines += ["## Problems in this run", ""]
        lines += [f"* {problem}" for problem in document["problems"]]
        lines.append("")
    lines += [
        "## How to rerun",
        "",
        f"`.venv/bin/python -m bench` (this run took {document['wall_s'] / 60:.0f} minutes, and LiteLLM is installed on first use into "
        "`~/.cache/cliproxy-bench/`), or `.venv/bin/python -m bench --quick` for a smoke run under a minute. "
        "`python -m bench.profile` writes a py-spy flame graph and a text profile of cliproxy under load. "
        "Raw numbers for every repetition are in benchmarks.json beside this page.",
        "",
    ]
    return lines


def render_markdown(document: dict) -> str:
    sections = [
        _header_section(document),
        _goals_section(document),
        _measurement_sections(document),
        _closing_sections(document),
    ]
    return "\n".join(line for section in sections for line in section)


def render_console(document: dict) -> str:
    """Return a short plain-text summary for the terminal."""
    lines = [f"cliproxy benchmark ({document['mode']}) {document['date']}", machine_line(document["machine"])]

    ceiling = document["ceiling"]
    lines.append(
        f"fake upstream ceiling ({ceiling.get('generator')}, c={ceiling.get('concurrency')}): "
        f"{_fmt(ceiling.get('json_rps'), 0)} req/s JSON, {_fmt(ceiling.get('sse_streams_per_s'), 0)} streams/s SSE"
    )
    for scenario in ("json", "sse"):
        table = document["summary"]["throughput"].get(scenario, {})
        for target, entries in table.items():
            cells = "  ".join(
                f"c={c}: {_fmt(entry['rps'], 0)}/s p50 {_fmt(entry['p50_ms'], 2)}ms" for c, entry in sorted(entries.items(), key=lambda item: int(item[0]))
            )
            lines.append(f"{scenario:4} {target:18} {cells}")

    for target, entries in document["summary"]["relay"].items():
        entry = entries.get("1") or next(iter(entries.values()))
        lines.append(
            f"relay {target:17} first event p50 {_fmt(entry['ttfe_p50_ms'], 3)} ms, event delay p50 "
            f"{_fmt(entry['delay_p50_ms'], 3)} / p99 {_fmt(entry['delay_p99_ms'], 3)} ms"
        )
    for target, row in document["summary"]["hold"].items():
        lines.append(
            f"hold  {target:17} {row['complete']}/{row['streams']} streams, RSS {row['rss_base_mib']} -> "
            f"{row['rss_peak_mib']} -> {row['rss_after_mib']} MiB"
        )

    if document["mode"] == "full":
        for target, goals in document["goals"].items():
            for goal in goals:
                lines.append(f"goal  {target:17} {_met_text(goal['met']):10} {goal['goal']}: {goal['measured']}")
    else:
        lines.append("goals are not judged in --quick mode")

    busiest = max_other_cpu(document)
    if busiest > BUSY_OTHER_CPU:
        lines.append(f"WARNING other processes used up to {busiest:.2f} cores during measurements; numbers are low")
    for problem in document["problems"]:
        lines.append(f"PROBLEM {problem}")
    return "\n".join(lines)


def write_outputs(document: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown_path = out_dir / "benchmarks.md"
    json_path = out_dir / "benchmarks.json"
    markdown_path.write_text(render_markdown(document))
    json_path.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    return markdown_path, json_path
