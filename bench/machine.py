"""Description of the machine and tool versions, stored with every result."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _is_virtual_machine() -> bool:
    try:
        return " hypervisor" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_revision(repo: Path) -> str | None:
    try:
        completed = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except OSError:
        return None
    return completed.stdout.strip() or None


def describe_machine(repo: Path) -> dict[str, object]:
    """Return cores, CPU model, memory, OS and versions of Python and mitmproxy."""
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "virtual_machine": _is_virtual_machine(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "mitmproxy": _package_version("mitmproxy"),
        "git_revision": _git_revision(repo),
    }


def machine_line(machine: dict[str, object]) -> str:
    virtual = ", virtual machine" if machine.get("virtual_machine") else ""
    return (
        f"{machine['cores']} cores, {machine['cpu_model']}{virtual}, {machine['memory_gib']} GiB RAM, "
        f"{machine['os']}, Python {machine['python']}, mitmproxy {machine['mitmproxy']}"
    )
