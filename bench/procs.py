"""Process helpers: start and stop process groups, read RSS and CPU time from /proc, wait for ports.

Linux only, because RSS, peak RSS and CPU time come from /proc.
"""

from __future__ import annotations

import http.client
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name in field 2 may contain spaces and parentheses, so split after the last ")".
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(root_pid: int) -> list[int]:
    """Return root_pid and all its descendants that are alive now."""
    children = _children_by_parent()
    pids = [root_pid]
    index = 0
    while index < len(pids):
        pids.extend(children.get(pids[index], []))
        index += 1
    return pids


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pids: list[int]) -> int:
    """Return the summed resident set size (VmRSS) of pids, in KiB."""
    return sum(_status_kib(pid, "VmRSS:") for pid in pids)


def peak_rss_kib(pids: list[int]) -> int:
    """Return the summed peak resident set size (VmHWM, kept by the kernel since start) of pids, in KiB."""
    return sum(_status_kib(pid, "VmHWM:") for pid in pids)


def cpu_seconds(pids: list[int]) -> float:
    """Return user plus system CPU time of pids, in seconds (children that already exited are not counted)."""
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def system_busy_seconds() -> float:
    """Return CPU time spent by all processes on all cores since boot (not idle, not iowait), in seconds."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    # Fields: user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """Return CPU time of this process plus its waited-for children (wrk runs), in seconds."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until 127.0.0.1:port accepts TCP connections; raise RuntimeError on timeout or early exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with code {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port 127.0.0.1:{port} did not open within {timeout_s:.0f} s")


def wait_for_http(
    port: int,
    path: str,
    timeout_s: float,
    proc: subprocess.Popen[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Wait until GET http://127.0.0.1:port{path} returns a 2xx status; raise RuntimeError on timeout."""
    deadline = time.monotonic() + timeout_s
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with code {proc.returncode} before {path} was ready")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            response.read()
            if 200 <= response.status < 300:
                return
            last_error = f"status {response.status}"
        except OSError as error:
            last_error = str(error)
        finally:
            connection.close()
        time.sleep(0.1)
    raise RuntimeError(f"GET 127.0.0.1:{port}{path} not ready within {timeout_s:.0f} s (last: {last_error})")


@dataclass
class ManagedProcess:
    """A child process started in its own session, so that stopping it also stops what it spawned."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log = open(self.log_path, "wb")
        environment = dict(os.environ)
        if self.env:
            environment.update(self.env)
        logger.info("starting %s: %s", self.name, " ".join(self.argv))
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=self.cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.proc.pid

    def pids(self) -> list[int]:
        return process_tree(self.pid) if self.proc is not None and self.proc.poll() is None else []

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send SIGTERM to the process group, then SIGKILL if it is still alive after timeout_s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            logger.info("stopping %s (pid %d)", self.name, self.proc.pid)
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) ignored SIGTERM for %.0f s; sending SIGKILL", self.name, self.proc.pid, timeout_s)
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
