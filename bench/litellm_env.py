"""Throwaway virtualenv with a pinned LiteLLM proxy, kept in a cache directory outside the repository."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

LITELLM_VERSION = "1.82.6"
# litellm 1.82.7 and 1.82.8 were published to PyPI in March 2026 with a credential-stealing .pth file
# (reported on litellm's GitHub tracker) and then removed from the index. Never install them.
FORBIDDEN_VERSIONS = frozenset({"1.82.7", "1.82.8"})
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cliproxy-bench"
_MARKER = ".bench-install-complete"


def litellm_venv(version: str = LITELLM_VERSION) -> Path:
    return CACHE_ROOT / f"litellm-{version}"


def litellm_executable(version: str = LITELLM_VERSION) -> Path | None:
    """Return the litellm CLI of a completed install, or None."""
    venv = litellm_venv(version)
    executable = venv / "bin" / "litellm"
    if (venv / _MARKER).exists() and executable.exists():
        return executable
    return None


def install_litellm(version: str = LITELLM_VERSION) -> Path:
    """Install `litellm[proxy]==version` into its own venv (minutes on first use) and return its CLI path.

    Raises ValueError for a known compromised version and RuntimeError when pip fails.
    """
    if version in FORBIDDEN_VERSIONS:
        raise ValueError(f"litellm {version} is a known compromised release; use {LITELLM_VERSION}")
    existing = litellm_executable(version)
    if existing is not None:
        return existing
    venv = litellm_venv(version)
    venv.parent.mkdir(parents=True, exist_ok=True)
    logger.info("installing litellm[proxy]==%s into %s (first use only)", version, venv)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    completed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", f"litellm[proxy]=={version}"],
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"pip install litellm[proxy]=={version} failed (exit {completed.returncode}): {completed.stderr[-2000:]}")
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if installed != version:
        raise RuntimeError(f"pip installed litellm {installed}, expected {version}")
    (venv / _MARKER).write_text(version + "\n")
    executable = venv / "bin" / "litellm"
    return executable
