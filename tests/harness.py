"""Running a real cliproxy process for end-to-end tests.

`ProxyProcess` writes a config.yaml into a temporary directory, starts
`mitmdump -s addons/cliproxy.py` (or `mitmweb`, or `cliproxy serve`) on a free loopback port,
waits for `/healthz`, and stops the process afterwards. Its log output is kept in a file so a
failing test can show it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROXY_KEY = "sk-test-proxy-key-0123456789abcdef0123"
STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def default_config(upstream: Any, port: int, auth_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A config with three accounts per provider (A, B, C) on the fake upstream."""
    def entries(provider: str) -> list[dict[str, Any]]:
        return [
            {"api-key": f"upstream-{provider}-{name}", "base-url": upstream.account_url(f"{provider}-{name}")}
            for name in ("A", "B", "C")
        ]

    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "auth-dir": str(auth_dir),
        "api-keys": [PROXY_KEY],
        "routing": {"strategy": "round-robin"},
        "request-retry": 1,
        "max-retry-interval": 5,
        "usage-statistics-enabled": True,
        "claude-api-key": entries("claude"),
        "codex-api-key": [
            {**entry, "base-url": entry["base-url"] + "/v1"} for entry in entries("codex")
        ],
        "gemini-api-key": entries("gemini"),
        "openai-compatibility": [
            {
                "name": "compat",
                "base-url": upstream.account_url("compat-A") + "/v1",
                "api-key-entries": [{"api-key": "upstream-compat-A"}],
                "models": [{"name": "upstream-model-x", "alias": "compat-model"}],
            }
        ],
    }
    config.update(overrides)
    return config


@dataclass
class ProxyProcess:
    """A cliproxy process under test."""

    directory: Path
    config: dict[str, Any]
    entry: str = "mitmdump"
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def port(self) -> int:
        return int(self.config["port"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.directory / "proxy.log"

    def write_config(self, config: dict[str, Any] | None = None) -> None:
        if config is not None:
            self.config = config
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        os.chmod(self.config_path, 0o600)

    def command(self) -> list[str]:
        config_option = ["--set", f"cliproxy_config={self.config_path}"]
        if self.entry == "mitmdump":
            # An explicit --mode skips the entry script's re-exec into reverse mode, which
            # tests/test_entry.py covers; every other test starts faster this way.
            mode = ["--mode", f"reverse:http://127.0.0.1:9@127.0.0.1:{self.port}"]
            return [str(BIN / "mitmdump"), "-s", "addons/cliproxy.py", *mode, *config_option, *self.extra_args]
        if self.entry == "mitmdump-plain":
            return [str(BIN / "mitmdump"), "-s", "addons/cliproxy.py", *config_option, *self.extra_args]
        if self.entry == "mitmweb":
            return [
                str(BIN / "mitmweb"), "-s", "addons/cliproxy.py", "--no-web-open-browser",
                "--set", f"web_port={free_port()}", *config_option, *self.extra_args,
            ]
        if self.entry == "serve":
            return [str(BIN / "cliproxy"), "serve", "--config", str(self.config_path), *self.extra_args]
        raise ValueError(f"unknown entry {self.entry!r}")

    def start(self) -> "ProxyProcess":
        if not self.config_path.exists():
            self.write_config()
        log = self.log_path.open("ab")
        # The fail backend keeps the generated management key out of the developer's keyring.
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
            **self.env,
        }
        env.pop("CLIPROXY_CONFIG", None)
        self.process = subprocess.Popen(
            self.command(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"cliproxy exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                if requests.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"cliproxy did not become ready:\n{self.log_text()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def headers(self, **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {PROXY_KEY}", **extra}

    def post(self, path: str, body: Any, *, key: str | None = PROXY_KEY, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if key is not None:
            headers.setdefault("authorization", f"Bearer {key}")
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        headers.setdefault("content-type", "application/json")
        return requests.post(self.base_url + path, data=data, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs)

    def get(self, path: str, *, key: str | None = PROXY_KEY, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if key is not None:
            headers.setdefault("authorization", f"Bearer {key}")
        return requests.get(self.base_url + path, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs)
