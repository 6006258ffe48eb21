"""Command line: `python -m bench [--quick] [--out DIR] [--with-litellm | --no-litellm] [--targets ...]`.

Starts the fake upstream, measures its ceiling, starts every available target, measures them
in turn and writes benchmarks.md and benchmarks.json. Exit status 1 means the harness could not
measure (a target failed to start, or a scenario completed no request); slow numbers never fail it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import targets as target_defs
from bench.litellm_env import LITELLM_VERSION, install_litellm, litellm_executable
from bench.load import LoadGenerator
from bench.machine import describe_machine
from bench.report import build_document, render_console, write_outputs
from bench.runner import FakeUpstream, Plan, Runner, machine_busy_cores, wait_until_quiet

logger = logging.getLogger("bench")

REPO = Path(__file__).resolve().parent.parent
ALL_TARGETS = ("direct", "mitm-bare", "mitm-bare-stream", "cliproxy-run", "cliproxy-mitmdump", "litellm")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark cliproxy against direct, bare mitmdump and LiteLLM on 127.0.0.1, and write benchmarks.md and benchmarks.json.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run under a minute: 1 repetition of 1 s, c=1 and 8, 100 streams; numbers not judged")
    parser.add_argument("--out", type=Path, help="directory for benchmarks.md and benchmarks.json (default: docs/, or a temporary directory with --quick)")
    litellm = parser.add_mutually_exclusive_group()
    litellm.add_argument("--with-litellm", action="store_true", help=f"measure LiteLLM {LITELLM_VERSION} in --quick runs too (full runs always do unless --no-litellm); installs it on first use")
    litellm.add_argument("--no-litellm", action="store_true", help="skip LiteLLM")
    parser.add_argument("--targets", help=f"comma-separated subset of {','.join(ALL_TARGETS)} (direct is always measured)")
    parser.add_argument("--reps", type=int, help="repetitions (full default 3, quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per load run, whole seconds with wrk (full default 5, quick 1)")
    parser.add_argument("--hold-streams", type=int, help="concurrent SSE streams for the memory test (full default 1000, quick 100)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help="before each repetition, wait up to this many seconds for other processes to use under 0.2 cores (default 0)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: rewrite benchmarks.md and benchmarks.json in --out from an earlier benchmarks.json",
    )
    parser.add_argument("--no-wrk", action="store_true", help="use the built-in asyncio load generator even if wrk is installed")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary directory with configs and process logs")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def build_plan(args: argparse.Namespace) -> Plan:
    plan = Plan.quick() if args.quick else Plan.full()
    if args.reps:
        plan.reps = args.reps
    if args.duration:
        plan.duration_s = args.duration
    if args.hold_streams:
        plan.hold_streams = args.hold_streams
    return plan


def selected_targets(args: argparse.Namespace) -> list[str]:
    if not args.targets:
        return list(ALL_TARGETS)
    names = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = [name for name in names if name not in ALL_TARGETS]
    if unknown:
        raise SystemExit(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(ALL_TARGETS)}")
    return ["direct"] + [name for name in names if name != "direct"]


def build_targets(args: argparse.Namespace, env: target_defs.Environment, names: list[str]) -> tuple[list[target_defs.Target], list[dict]]:
    """Create the targets that can run here; return them and notes for those skipped."""
    created: list[target_defs.Target] = []
    skipped: list[dict] = []
    for name in names:
        if name == "direct":
            created.append(target_defs.direct_target(env))
        elif name in ("mitm-bare", "mitm-bare-stream"):
            created.append(target_defs.mitm_bare_target(env, stream_sse=name == "mitm-bare-stream"))
        elif name == "cliproxy-run":
            if (REPO / "run.sh").exists():
                created.append(target_defs.cliproxy_run_target(env))
            else:
                skipped.append({"name": name, "description": "./run.sh", "command": "", "error": "run.sh does not exist yet"})
        elif name == "cliproxy-mitmdump":
            if (REPO / "addons" / "cliproxy.py").exists():
                created.append(target_defs.cliproxy_mitmdump_target(env))
            else:
                skipped.append({"name": name, "description": "mitmdump -s addons/cliproxy.py", "command": "", "error": "addons/cliproxy.py does not exist yet"})
        elif name == "litellm":
            # Quick runs skip LiteLLM (its start alone takes about 10 s) unless --with-litellm is given.
            if args.no_litellm or (args.quick and not args.with_litellm):
                skipped.append({"name": name, "description": f"LiteLLM {LITELLM_VERSION}", "command": "", "error": "skipped (use --with-litellm)"})
                continue
            executable = litellm_executable() or install_litellm()
            created.append(target_defs.litellm_target(env, executable))
    return created, skipped


def start_targets(targets: list[target_defs.Target], problems: list[str]) -> list[target_defs.Target]:
    """Start all targets at once, wait for each, and return those that became ready."""
    for target in targets:
        target.start()
    ready = []
    for target in targets:
        try:
            target.wait_ready()
            ready.append(target)
        except RuntimeError as error:
            target.error = str(error).splitlines()[0]
            problems.append(str(error))
            logger.error("%s", error)
            target.stop()
    return ready


def measure(plan: Plan, runner: Runner, targets: list[target_defs.Target], wait_quiet_s: float) -> bool:
    """Measure the ceiling, start the proxies and run every scenario; return True if the harness failed."""
    direct = targets[0]
    runner.measure_ceiling(direct)
    proxies = start_targets(targets[1:], runner.data.problems)
    runner.targets = [direct, *proxies]
    runner.record_memory("idle")
    runner.warm_up()

    for rep in range(plan.reps):
        if wait_quiet_s:
            wait_until_quiet(wait_quiet_s)
        runner.run_throughput(rep)
        runner.run_relay(rep)
    runner.run_hold()
    runner.record_memory("end")
    runner.record_upstream_stats()

    failed_to_start = len(proxies) < len(targets) - 1
    return failed_to_start or any("no request completed" in problem for problem in runner.data.problems)


def portable_command(command: str, work_dir: Path) -> str:
    """Shorten a command line for the results page: paths relative to the repository or ~, <work> for the temporary directory."""
    return command.replace(str(work_dir), "<work>").replace(str(REPO) + "/", "").replace(str(Path.home()), "~")


def describe_run(
    argv: list[str],
    plan: Plan,
    loadgen: LoadGenerator,
    runner: Runner,
    targets: list[target_defs.Target],
    skipped: list[dict],
    wall_s: float,
    work_dir: Path,
) -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench " + shlex.join(argv),
        "mode": plan.mode,
        "plan": {**dataclasses.asdict(plan), "hold_stream_seconds": plan.hold_stream_seconds},
        "machine": describe_machine(REPO),
        "loadgen": loadgen.describe(),
        "litellm_version": LITELLM_VERSION,
        "ceiling": runner.data.ceiling,
        "targets": [
            {
                "name": target.name,
                "description": target.description,
                "command": portable_command(target.command, work_dir),
                "error": target.error,
            }
            for target in targets
        ]
        + skipped,
        "problems": runner.data.problems,
        "wall_s": round(wall_s, 1),
    }


def render_again(source: Path, out_dir: Path) -> int:
    """Rebuild the summary, goals and pages from the metadata and raw numbers of an earlier run."""
    earlier = json.loads(source.read_text())
    meta = {key: value for key, value in earlier.items() if key not in ("schema", "summary", "goals", "raw")}
    document = build_document(meta, earlier["raw"])
    markdown_path, json_path = write_outputs(document, out_dir)
    print(render_console(document))
    print(f"wrote {markdown_path} and {json_path} from {source}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.render:
        return render_again(args.render, args.out or args.render.parent)
    plan = build_plan(args)
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="cliproxy-bench-quick-")) if args.quick else REPO / "docs")
    work_dir = Path(tempfile.mkdtemp(prefix="cliproxy-bench-work-"))
    started = time.monotonic()
    loadgen = LoadGenerator(prefer_wrk=not args.no_wrk)
    upstream = FakeUpstream(work_dir, REPO)
    env = target_defs.Environment(repo=REPO, work_dir=work_dir, upstream_port=upstream.port)
    targets: list[target_defs.Target] = []
    harness_failed = True
    busy_before_start = machine_busy_cores()
    if busy_before_start > 0.1:
        logger.warning("the machine is busy before the benchmark starts: %.2f cores in use by other processes", busy_before_start)
    try:
        upstream.start()
        targets, skipped = build_targets(args, env, selected_targets(args))
        runner = Runner(plan, loadgen, targets[:1], upstream)
        harness_failed = measure(plan, runner, targets, args.wait_quiet)

        meta = describe_run(argv, plan, loadgen, runner, targets, skipped, time.monotonic() - started, work_dir)
        meta["busy_cores_before_start"] = busy_before_start
        raw = {
            "throughput": runner.data.throughput,
            "relay": runner.data.relay,
            "hold": runner.data.hold,
            "memory": runner.data.memory,
            "upstream_stats": runner.data.upstream_stats,
        }
        document = build_document(meta, raw)
        markdown_path, json_path = write_outputs(document, out_dir)
        print(render_console(document))
        print(f"wrote {markdown_path} and {json_path} in {meta['wall_s']} s")
    finally:
        for target in reversed(targets):
            target.stop()
        upstream.stop()
        if args.keep_work or harness_failed:
            logger.info("configs and process logs kept in %s", work_dir)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 1 if harness_failed else 0


if __name__ == "__main__":
    sys.exit(main())
