"""Benchmark targets: how each one is started, where it listens, and which headers a client sends.

Targets:
* direct: the fake upstream itself (the baseline).
* mitm-bare: `mitmdump -q` in reverse mode with lazy upstream connections and no addon (JSON only).
* mitm-bare-stream: the same plus bench/mitm_stream_addon.py, which turns on `stream` for SSE
  responses (SSE only, because buffered SSE is not comparable).
* cliproxy-run: `./run.sh` with every feature on (key gate, round robin over 3 accounts,
  failover armed, usage statistics on, request log off).
* cliproxy-mitmdump: `mitmdump -s addons/cliproxy.py` with the same config.
* litellm: LiteLLM's proxy (pinned version, own venv) pointed at the fake as an OpenAI-compatible model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench import procs
from bench.litellm_env import LITELLM_VERSION

logger = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
PROXY_KEY = "bench-proxy-key-0123456789abcdef0123456789"
LITELLM_MASTER_KEY = "sk-bench-master-key-0123456789abcdef"
ACCOUNTS = ("a", "b", "c")

JSON = "json"
SSE = "sse"
RELAY = "relay"
HOLD = "hold"


@dataclass
class Target:
    """One thing to measure: a port to load, the headers to send, and the process behind it (if any)."""

    name: str
    description: str
    port: int
    headers: dict[str, str]
    scenarios: frozenset[str]
    process: procs.ManagedProcess | None = None
    ready_path: str | None = None
    ready_headers: dict[str, str] = field(default_factory=dict)
    start_timeout_s: float = 30.0
    path: str = CHAT_PATH
    error: str | None = None

    @property
    def command(self) -> str:
        """The command line, preceded by the environment variables the benchmark sets for it."""
        if self.process is None:
            return "(no process)"
        assignments = [f"{name}={value}" for name, value in (self.process.env or {}).items()]
        return " ".join(assignments + self.process.argv)

    def start(self) -> None:
        if self.process is not None:
            self.process.start()

    def wait_ready(self) -> None:
        """Wait for the port (and the readiness path, when set); raise RuntimeError with the log tail on failure."""
        if self.process is None:
            return
        try:
            if self.ready_path:
                procs.wait_for_http(self.port, self.ready_path, self.start_timeout_s, self.process.proc, self.ready_headers)
            else:
                procs.wait_for_port(self.port, self.start_timeout_s, self.process.proc)
        except RuntimeError as error:
            raise RuntimeError(f"{self.name} did not start: {error}\n--- log tail ---\n{self.process.log_tail()}") from error

    def pids(self) -> list[int]:
        return self.process.pids() if self.process else []

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class Environment:
    """Paths and ports shared by all targets of one run."""

    repo: Path
    work_dir: Path
    upstream_port: int

    @property
    def venv_bin(self) -> Path:
        return self.repo / ".venv" / "bin"

    def log_path(self, name: str) -> Path:
        return self.work_dir / f"{name}.log"


def direct_target(env: Environment) -> Target:
    return Target(
        name="direct",
        description="the fake upstream, no proxy",
        port=env.upstream_port,
        headers={"Authorization": "Bearer upstream-key-direct"},
        scenarios=frozenset({JSON, SSE, RELAY}),
    )


def _reverse_mode(upstream_port: int, listen_port: int) -> str:
    return f"reverse:http://127.0.0.1:{upstream_port}@127.0.0.1:{listen_port}"


def mitm_bare_target(env: Environment, stream_sse: bool) -> Target:
    """Build bare mitmdump, without an addon (JSON) or with the 5-line stream addon (SSE)."""
    port = procs.free_port()
    name = "mitm-bare-stream" if stream_sse else "mitm-bare"
    argv = [
        str(env.venv_bin / "mitmdump"),
        "--mode",
        _reverse_mode(env.upstream_port, port),
        "--set",
        "connection_strategy=lazy",
        "-q",
    ]
    if stream_sse:
        argv += ["-s", str(Path(__file__).with_name("mitm_stream_addon.py"))]
        description = "mitmdump -q, reverse, lazy, 5-line addon that sets stream=True for text/event-stream"
        scenarios = frozenset({SSE, RELAY, HOLD})
    else:
        description = "mitmdump -q, reverse, lazy, no addon"
        scenarios = frozenset({JSON})
    return Target(
        name=name,
        description=description,
        port=port,
        headers={"Authorization": "Bearer upstream-key-direct"},
        scenarios=scenarios,
        process=procs.ManagedProcess(name, argv, env.log_path(name)),
    )


def write_cliproxy_config(env: Environment, port: int, name: str) -> Path:
    """Write a cliproxy config with every feature on and three accounts on the fake upstream."""
    auth_dir = env.work_dir / f"{name}-auths"
    auth_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "host": "127.0.0.1",
        "port": port,
        "auth-dir": str(auth_dir),
        "api-keys": [PROXY_KEY],
        "routing": {"strategy": "round-robin"},
        "request-retry": 3,
        "max-retry-interval": 30,
        "request-log": False,
        "usage-statistics-enabled": True,
        "openai-compatibility": [
            {
                "name": f"bench-{account}",
                "base-url": f"http://127.0.0.1:{env.upstream_port}/acct/{account.upper()}/v1",
                "api-key-entries": [{"api-key": f"upstream-key-{account}"}],
                "models": [{"name": "bench-model", "alias": "bench-model"}],
            }
            for account in ACCOUNTS
        ],
    }
    path = env.work_dir / f"{name}-config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cliproxy_run_target(env: Environment) -> Target:
    port = procs.free_port()
    name = "cliproxy-run"
    config = write_cliproxy_config(env, port, name)
    process = procs.ManagedProcess(name, ["./run.sh"], env.log_path(name), env={"CLIPROXY_CONFIG": str(config)}, cwd=env.repo)
    return Target(
        name=name,
        description="./run.sh, every feature on (key gate, round robin over 3 accounts, retry 3, usage on, request log off)",
        port=port,
        headers={"Authorization": f"Bearer {PROXY_KEY}"},
        scenarios=frozenset({JSON, SSE, RELAY, HOLD}),
        process=process,
        ready_path="/healthz",
        # run.sh reinstalls the project into .venv first when pyproject.toml changed.
        start_timeout_s=180.0,
    )


def cliproxy_mitmdump_target(env: Environment) -> Target:
    port = procs.free_port()
    name = "cliproxy-mitmdump"
    config = write_cliproxy_config(env, port, name)
    argv = [
        str(env.venv_bin / "mitmdump"),
        "-q",
        "-s",
        str(env.repo / "addons" / "cliproxy.py"),
        "--set",
        f"cliproxy_config={config}",
    ]
    process = procs.ManagedProcess(name, argv, env.log_path(name), cwd=env.repo)
    return Target(
        name=name,
        description="mitmdump -q -s addons/cliproxy.py, same config as cliproxy-run",
        port=port,
        headers={"Authorization": f"Bearer {PROXY_KEY}"},
        scenarios=frozenset({JSON, SSE, RELAY, HOLD}),
        process=process,
        ready_path="/healthz",
    )


_UVICORN_LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        # One access line per request would be extra work that the other proxies do not do.
        "uvicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}


def litellm_target(env: Environment, executable: Path) -> Target:
    """Build LiteLLM's proxy with one OpenAI-compatible model on the fake upstream and a master key."""
    port = procs.free_port()
    name = "litellm"
    config = {
        "model_list": [
            {
                "model_name": "bench-model",
                "litellm_params": {
                    "model": "openai/bench-model",
                    "api_base": f"http://127.0.0.1:{env.upstream_port}/v1",
                    "api_key": "upstream-key-litellm",
                },
            }
        ],
        "general_settings": {"master_key": LITELLM_MASTER_KEY},
        "litellm_settings": {"telemetry": False},
    }
    config_path = env.work_dir / "litellm-config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log_config_path = env.work_dir / "litellm-log-config.json"
    log_config_path.write_text(json.dumps(_UVICORN_LOG_CONFIG))

    argv = [
        str(executable),
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
        "--telemetry",
        "False",
        "--log_config",
        str(log_config_path),
    ]

    # Use the bundled model cost map instead of fetching it from the network at start.
    process_env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"}
    return Target(
        name=name,
        description=f"LiteLLM {LITELLM_VERSION} proxy, 1 uvicorn worker, master key, access log off",
        port=port,
        headers={"Authorization": f"Bearer {LITELLM_MASTER_KEY}"},
        scenarios=frozenset({JSON, SSE, RELAY, HOLD}),
        process=procs.ManagedProcess(name, argv, env.log_path(name), env=process_env, cwd=env.work_dir),
        ready_path="/health/liveliness",
        start_timeout_s=120.0,
    )
