"""Profile a proxy under load with py-spy: a flame graph (SVG) and a text profile of the hottest functions.

Run: `.venv/bin/python -m bench.profile [--target cliproxy-run] [--scenario json] [--out DIR]`.

py-spy samples the running process from outside, so the proxy runs unchanged. It needs ptrace
rights, which root has. The command takes py-spy from PATH, or installs the PyPI wheel (a static
binary) once into its own venv under ~/.cache/cliproxy-bench/py-spy. The load comes from the
same generator as the benchmark. Two windows of the same load are recorded: one for the SVG,
and one for the collapsed stacks that the text profile is computed from. Only samples of the
thread holding the GIL are kept, so the shares are shares of the proxy's Python CPU time.
"""

from __future__ import annotations

import argparse
import collections
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import targets as target_defs
from bench.httpclient import chat_body
from bench.litellm_env import CACHE_ROOT
from bench.load import LoadGenerator
from bench.runner import SSE_EVENTS, FakeUpstream

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
PY_SPY_VENV = CACHE_ROOT / "py-spy"
PROFILE_TARGETS = ("cliproxy-run", "cliproxy-mitmdump", "mitm-bare", "mitm-bare-stream")
PROJECT_PACKAGES = ("addons", "config", "pool", "providers", "mgmt", "store", "oauth")


def find_or_install_py_spy() -> Path:
    """Return a py-spy executable, installing it into its own venv on first use."""
    on_path = shutil.which("py-spy")
    if on_path:
        return Path(on_path)
    executable = PY_SPY_VENV / "bin" / "py-spy"
    if executable.exists():
        return executable
    logger.info("installing py-spy into %s (first use only)", PY_SPY_VENV)
    PY_SPY_VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PY_SPY_VENV)], check=True)
    subprocess.run(
        [str(PY_SPY_VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "py-spy"], check=True
    )
    return executable


def make_target(name: str, env: target_defs.Environment) -> target_defs.Target:
    if name == "cliproxy-run":
        return target_defs.cliproxy_run_target(env)
    if name == "cliproxy-mitmdump":
        return target_defs.cliproxy_mitmdump_target(env)
    return target_defs.mitm_bare_target(env, stream_sse=name == "mitm-bare-stream")


def python_pid(target: target_defs.Target) -> int:
    """Return the pid of the Python process to sample: the largest process in the target's tree."""
    from bench.procs import rss_kib

    pids = target.pids()
    return max(pids, key=lambda pid: rss_kib([pid]))


def record(py_spy: Path, pid: int, duration_s: int, rate: int, output_format: str, output: Path, load) -> None:  # type: ignore[no-untyped-def]
    """Run py-spy for duration_s while `load()` runs in a thread; raise RuntimeError if py-spy fails."""
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    time.sleep(0.3)
    completed = subprocess.run(
        # --gil keeps only samples of the thread holding the GIL, so threads blocked in waits do not count as busy.
        [str(py_spy), "record", "--pid", str(pid), "--gil", "--threads", "--rate", str(rate), "--duration", str(duration_s), "--format", output_format, "-o", str(output)],
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
    )
    worker.join()
    if completed.returncode != 0 or not output.exists():
        raise RuntimeError(f"py-spy record failed (exit {completed.returncode}): {completed.stderr.strip()[-1500:]}")


def _short(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/module.py:123)"; drop the line number.
    name, _, location = frame.partition(" (")
    path = location.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({path})" if path else name


def _in_project(frame: str) -> bool:
    # py-spy prints paths relative to their sys.path entry, so project modules start with their package.
    path = frame.rsplit(" (", 1)[-1].rstrip(")")
    if path.startswith(str(REPO) + "/"):
        path = path[len(str(REPO)) + 1 :]
    return any(path.startswith(f"{package}/") for package in PROJECT_PACKAGES)


def summarize_collapsed(collapsed: Path, top: int = 30) -> str:
    """Return sample shares per thread, self and inclusive shares per function, and self share per source file."""
    self_counts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    per_file: collections.Counter[str] = collections.Counter()
    project: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        raw_frames = stack.split(";")
        # With --threads the first frame names the thread, e.g. "thread (2533): MainThread".
        if raw_frames[0].startswith("thread ("):
            threads[raw_frames[0].split(": ", 1)[-1]] += count
            raw_frames = raw_frames[1:] or raw_frames
        frames = [_short(frame) for frame in raw_frames]
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
            if _in_project(frame):
                project[frame] += count
        leaf_file = frames[-1].rsplit(" (", 1)[-1].rstrip(")")
        per_file[leaf_file] += count
    if total == 0:
        return "no samples\n"

    def block(title: str, counter: collections.Counter[str], label: str = "function (file)") -> list[str]:
        lines = [title, f"{'share':>7}  {'samples':>7}  {label}"]
        for frame, count in counter.most_common(top):
            lines.append(f"{count / total:7.1%}  {count:7d}  {frame}")
        return lines + [""]

    lines = [f"{total} samples of the thread holding the GIL\n"]
    if threads:
        lines += block("Samples per thread:", threads, "thread")
    lines += block("Self time (the function itself was running):", self_counts)
    lines += block("Inclusive time (the function was on the stack):", inclusive)
    lines += block("Self time per source file:", per_file, "file")
    lines += block("Inclusive time of cliproxy's own functions (" + ", ".join(PROJECT_PACKAGES) + "):", project)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description="Profile a proxy under load with py-spy.")
    parser.add_argument("--target", choices=PROFILE_TARGETS, default="cliproxy-run", help="what to profile (default cliproxy-run)")
    parser.add_argument("--scenario", choices=("json", "sse"), default="json", help="1 KiB JSON responses or 50-event SSE streams")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive client connections (default 8)")
    parser.add_argument("--duration", type=int, default=15, help="seconds per recording window (default 15)")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second (default 100)")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out", help="output directory (default bench-out/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    py_spy = find_or_install_py_spy()
    args.out.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="cliproxy-profile-"))
    upstream = FakeUpstream(work_dir, REPO)
    env = target_defs.Environment(repo=REPO, work_dir=work_dir, upstream_port=upstream.port)
    target = make_target(args.target, env)
    loadgen = LoadGenerator()
    body = chat_body(stream=args.scenario == "sse", events=SSE_EVENTS)
    stem = f"profile-{args.target}-{args.scenario}"
    try:
        upstream.start()
        target.start()
        target.wait_ready()
        loadgen.run(target.port, target.path, target.headers, body, args.concurrency, 2)
        pid = python_pid(target)
        results = []

        def load() -> None:
            results.append(loadgen.run(target.port, target.path, target.headers, body, args.concurrency, args.duration + 1))

        svg = args.out / f"{stem}.svg"
        collapsed = args.out / f"{stem}.collapsed.txt"
        logger.info("recording %s (pid %d) for %d s: flame graph", args.target, pid, args.duration)
        record(py_spy, pid, args.duration, args.rate, "flamegraph", svg, load)
        logger.info("recording %s (pid %d) for %d s: collapsed stacks", args.target, pid, args.duration)
        record(py_spy, pid, args.duration, args.rate, "raw", collapsed, load)
        header = (
            f"py-spy profile of {args.target} ({target.command}) under {args.scenario} load at c={args.concurrency}, "
            f"{args.rate} samples/s for {args.duration} s; load: "
            + ", ".join(f"{result.rps:.0f} req/s p50 {result.p50_ms} ms" for result in results)
            + "\n\n"
        )
        text_path = args.out / f"{stem}.txt"
        text_path.write_text(header + summarize_collapsed(collapsed))
        print(text_path.read_text()[:4000])
        print(f"wrote {svg}, {collapsed} and {text_path}")
    finally:
        target.stop()
        upstream.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
