"""Running the real coding CLIs (Claude Code, Codex CLI, Gemini CLI) against a cliproxy process.

`.ci/install-clients.sh` installs pinned versions of the CLIs with npm. The tests look for
them in `$CLIPROXY_CLIENTS_DIR/node_modules/.bin`, by default under `.ci/cache/clients` in
the repository. When they are missing, `require_cli()` skips the test, or fails it when the
environment variable CI is set, so a CI run cannot pass without running them.

Each CLI runs in a minimal environment (like `env -i`): a throwaway HOME (and CODEX_HOME),
no inherited variables, standard input from /dev/null and a timeout. The settings below
turn off telemetry, update checks, error reports and plugins, so a CLI connects only to the
proxy's base URL on 127.0.0.1. The settings were checked with Claude Code 2.1.197, Codex CLI
0.171.0 and Gemini CLI 0.61.0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes import RecordedRequest
from tests.harness import PROXY_KEY, ROOT

CLIENTS_DIR_ENV = "CLIPROXY_CLIENTS_DIR"
DEFAULT_CLIENTS_DIR = ROOT / ".ci" / "cache" / "clients"
CLI_TIMEOUT = 60.0
"""Seconds one CLI run may take. Passing runs took 0.5 to 4 s on a 2-core machine."""

CLAUDE_MODEL = "claude-sonnet-4-5"
CODEX_MODEL = "gpt-5-codex"
PROMPT = "say hi"

# Header that carries each provider's upstream credential, and how its value is built from
# the account's secret. default_config() gives account "<provider>-<X>" the secret
# "upstream-<provider>-<X>".
CREDENTIAL_HEADERS = {
    "claude": ("x-api-key", "{secret}"),
    "codex": ("authorization", "Bearer {secret}"),
    "compat": ("authorization", "Bearer {secret}"),
    "gemini": ("x-goog-api-key", "{secret}"),
}
CLIENT_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")


# ----- locating the CLIs -----


def clients_dir() -> Path:
    """Return the directory that `.ci/install-clients.sh` installed the CLIs into."""
    configured = os.environ.get(CLIENTS_DIR_ENV)
    return Path(configured).resolve() if configured else DEFAULT_CLIENTS_DIR


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_cli(name: str) -> Path:
    """Return the path of CLI `name`, or skip the test (fail it under CI) when it is missing."""
    path = clients_dir() / "node_modules" / ".bin" / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    message = (
        f"{name} is not installed in {path.parent}: run `.ci/install-clients.sh {clients_dir()}` "
        f"(or set {CLIENTS_DIR_ENV} to a directory that script installed into)"
    )
    if running_in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def node_directory() -> str:
    """Return the directory of the `node` binary that the CLIs' launcher scripts need."""
    node = shutil.which("node")
    if node is None:
        message = "node is not on PATH; Codex CLI and Gemini CLI need node 20 or newer"
        if running_in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return str(Path(node).resolve().parent)


# ----- running a CLI -----


@dataclass
class CliRun:
    """The outcome of one CLI process."""

    argv: list[str]
    returncode: int | None
    """Exit status; None when the run timed out and was killed."""
    stdout: str
    stderr: str
    seconds: float

    def describe(self, tail: int = 3000) -> str:
        """Return the command, exit status and output ends, for assertion messages."""
        status = "timed out" if self.returncode is None else f"exit {self.returncode}"
        return (
            f"$ {' '.join(self.argv)}\n{status} after {self.seconds:.1f} s\n"
            f"--- stdout (end) ---\n{self.stdout[-tail:]}\n--- stderr (end) ---\n{self.stderr[-tail:]}"
        )


def run_cli(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = CLI_TIMEOUT) -> CliRun:
    """Run a CLI with exactly `env` as its environment and stdin from /dev/null.

    The CLI runs in its own process group, so a timeout kills it together with the
    processes it started (Codex's launcher starts the native binary, for example).
    """
    started = time.monotonic()
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        returncode: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        returncode = None
    return CliRun(argv, returncode, stdout, stderr, time.monotonic() - started)


def minimal_env(home: Path, **variables: str) -> dict[str, str]:
    """Return an environment with only PATH, HOME, TERM, TMPDIR, LANG and `variables`."""
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    bin_dir = clients_dir() / "node_modules" / ".bin"
    return {
        "PATH": os.pathsep.join([str(bin_dir), node_directory(), "/usr/bin", "/bin"]),
        "HOME": str(home),
        "TERM": "dumb",
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        **variables,
    }


def _workspace(root: Path, name: str) -> tuple[Path, Path]:
    """Create and return (home, working directory) for one CLI run under `root`."""
    home = root / name / "home"
    work = root / name / "work"
    home.mkdir(parents=True)
    work.mkdir(parents=True)
    return home, work


def claude_code_env(base_url: str, home: Path) -> dict[str, str]:
    """Return the environment for Claude Code with the proxy as its Anthropic endpoint."""
    return minimal_env(
        home,
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY=PROXY_KEY,
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_ERROR_REPORTING="1",
        DISABLE_BUG_COMMAND="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        # One retry: a persistent error then ends the run quickly instead of after 10 backoffs.
        CLAUDE_CODE_MAX_RETRIES="1",
    )


def run_claude_code(
    claude: Path, base_url: str, root: Path, prompt: str = PROMPT, model: str = CLAUDE_MODEL
) -> CliRun:
    """Run `claude -p PROMPT --model MODEL` against the proxy at `base_url`."""
    home, work = _workspace(root, "claude")
    env = claude_code_env(base_url, home)
    return run_cli([str(claude), "-p", prompt, "--model", model], env, work)


CODEX_PROVIDER = "cliproxy"
CODEX_KEY_VARIABLE = "CLIPROXY_API_KEY"


def codex_config(base_url: str, model: str = CODEX_MODEL) -> str:
    """Return a Codex config.toml that sends the model to the proxy's Responses API."""
    return f"""\
model = "{model}"
model_provider = "{CODEX_PROVIDER}"
check_for_update_on_startup = false

[analytics]
enabled = false

[feedback]
enabled = false

# Without this, Codex syncs its curated plugins from github.com at start.
[features]
plugins = false

[model_providers.{CODEX_PROVIDER}]
name = "cliproxy under test"
base_url = "{base_url}/v1"
env_key = "{CODEX_KEY_VARIABLE}"
wire_api = "responses"
request_max_retries = 1
stream_max_retries = 1
"""


def run_codex(
    codex: Path, base_url: str, root: Path, prompt: str = PROMPT, model: str = CODEX_MODEL
) -> tuple[CliRun, Path]:
    """Run `codex exec PROMPT` against the proxy; return the run and the last-message file."""
    home, work = _workspace(root, "codex")
    codex_home = home / ".codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(codex_config(base_url, model))
    last_message = root / "codex" / "last-message.txt"
    env = minimal_env(home, CODEX_HOME=str(codex_home), **{CODEX_KEY_VARIABLE: PROXY_KEY})
    argv = [str(codex), "exec", "--skip-git-repo-check", "--ephemeral", "-o", str(last_message), prompt]
    return run_cli(argv, env, work), last_message


GEMINI_SETTINGS = {
    # Without selectedType, GOOGLE_GEMINI_BASE_URL makes Gemini CLI 0.61.0 pick the "gateway"
    # auth type, which it then rejects ("Invalid auth method selected.", exit 41).
    "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
}


def run_gemini(
    gemini: Path, base_url: str, root: Path, prompt: str = PROMPT, model: str | None = None
) -> CliRun:
    """Run `gemini -p PROMPT [-m MODEL]` against the proxy at `base_url`.

    Without a model, Gemini CLI first calls its router model to choose the model.
    """
    home, work = _workspace(root, "gemini")
    settings = home / ".gemini" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps(GEMINI_SETTINGS, indent=2))
    env = minimal_env(home, GEMINI_API_KEY=PROXY_KEY, GOOGLE_GEMINI_BASE_URL=base_url)
    argv = [str(gemini), "-p", prompt]
    if model is not None:
        argv += ["-m", model]
    return run_cli(argv, env, work)


# ----- checking what reached the fake upstream -----


def provider_of(record: RecordedRequest) -> str:
    """Return the provider part of the fake account name, e.g. "claude" for "claude-B"."""
    return record.account.rpartition("-")[0]


def credential_problems(record: RecordedRequest) -> list[str]:
    """Return what is wrong with the credentials of an upstream request (empty when correct).

    The request must carry the account's own secret in its provider's header, no other
    client credential header, and the proxy key nowhere (headers, path or query).
    """
    provider = provider_of(record)
    if provider not in CREDENTIAL_HEADERS:
        return [f"request {record.seq} went to unknown account {record.account!r}"]
    header, template = CREDENTIAL_HEADERS[provider]
    expected = template.format(secret=f"upstream-{record.account}")

    problems = []
    values = record.header_values(header)
    if values != [expected]:
        problems.append(f"{header} of request {record.seq} to {record.account} is {values}, expected [{expected!r}]")
    for other in CLIENT_CREDENTIAL_HEADERS:
        if other != header and record.header_values(other):
            problems.append(f"request {record.seq} to {record.account} still has a {other} header")
    if any(PROXY_KEY in value for _, value in record.headers):
        problems.append(f"the proxy key reached the upstream in a header of request {record.seq}")
    if PROXY_KEY in record.raw_path:
        problems.append(f"the proxy key reached the upstream in the path of request {record.seq}")
    return problems


def summarize(records: list[RecordedRequest]) -> str:
    """Return one line per recorded request, for assertion messages."""
    lines = []
    for record in records:
        stream = record.json.get("stream") if isinstance(record.json, dict) else None
        query = "&".join(f"{name}={value}" for name, value in record.query.items())
        target = record.path + (f"?{query}" if query else "")
        lines.append(f"#{record.seq} {record.account}: {record.method} {target} stream={stream} -> {record.status}")
    return "\n".join(lines) or "(no requests)"
