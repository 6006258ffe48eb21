"""A management API without a proxy, for tests: a config in a directory, a pool, a key.

`Harness.call()` sends a request through the same access checks and handlers the proxy
uses, from a loopback peer with the management key unless the caller passes others.
"""

from __future__ import annotations

import http.client
import http.server
import json as jsonlib
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keyring.backend

from config import Config, ConfigFile
from mgmt.context import ConfigAccess, LogSource, MgmtContext, UsageSource
from mgmt.keys import ENV_PASSWORD, GeneratedKeyStore, ManagementKeys
from mgmt.oauth_callback import CallbackListeners
from mgmt.router import MgmtRequest, MgmtResponse
from mgmt.security import FailedAuthTracker
from mgmt.service import ManagementService, SecretKeyHasher
from oauth.flow import LoginRegistry
from oauth.providers import resolve_endpoints
from pool import AccountPool, AuthFileProblem, Family, load_accounts


class MemoryKeyring(keyring.backend.KeyringBackend):
    """An in-memory keyring backend, so tests never touch the OS keyring."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.passwords.pop((service, username), None)


MINIMAL_CONFIG = """\
# cliproxy test config
host: "127.0.0.1"
port: 8317
auth-dir: "auths"
api-keys:
  - "sk-test-one"  # first key
routing:
  strategy: "round-robin"
remote-management:
  allow-remote: false
  secret-key: ""
"""


class Harness:
    """A `ManagementService` over a config file in `directory`, with a live pool."""

    def __init__(
        self,
        directory: Path,
        config_text: str = MINIMAL_CONFIG,
        *,
        env_password: str | None = None,
        usage: UsageSource | None = None,
        logs: LogSource | None = None,
        release_url: str = "",
        catalog: dict[Family, tuple[str, ...]] | None = None,
        tracker: FailedAuthTracker | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.config_path = self.directory / "config.yaml"
        if not self.config_path.exists():
            self.config_path.write_text(config_text)
        (self.directory / "auths").mkdir(exist_ok=True, mode=0o700)
        self.config_file = ConfigFile(self.config_path)
        self.pool = AccountPool()
        self.keyring = MemoryKeyring()
        self.key_store = GeneratedKeyStore(self.directory, backend=self.keyring)
        self.management_key = self.key_store.load_or_create()

        standalone = ConfigAccess.standalone(self.config_file)

        self.auth_problems: list[AuthFileProblem] = []

        def apply(config: Config) -> Config:
            self.pool.strategy = config.routing_strategy
            reload_accounts(config)
            return config

        def reload_accounts(config: Config) -> None:
            accounts, self.auth_problems = load_accounts(config)
            self.pool.set_accounts(accounts)

        self.config = ConfigAccess(
            self.config_file,
            standalone.current,
            lambda mutate: apply(standalone.edit(mutate)),
            lambda text: apply(standalone.replace_text(text)),
        )
        apply(self.config.current())
        self.keys = ManagementKeys(
            lambda: self.config.current().remote_management.secret_key,
            env_password,
            self.management_key,
        )
        self.ctx = MgmtContext(
            config=self.config,
            keys=self.keys,
            pool=self.pool,
            reload_accounts=lambda: reload_accounts(self.config.current()),
            auth_problems=lambda: self.auth_problems,
            release_url=release_url,
            model_catalog=lambda: catalog or {},
        )
        self.logins = LoginRegistry(
            self.auth_dir,
            resolve_endpoints(self.config.current().oauth_endpoints),
            on_saved=lambda _path, _provider: self.ctx.reload_accounts(),
        )
        self.ctx.logins = lambda: self.logins
        self.redirect_ports = {"claude": free_port(), "codex": free_port(), "gemini": free_port()}
        self.ctx.oauth_redirects = CallbackListeners(
            self.ctx.logins, ports=self.redirect_ports
        )
        if usage is not None:
            self.ctx.usage = usage
        if logs is not None:
            self.ctx.logs = logs
        self.service = ManagementService(self.ctx, tracker=tracker)
        self.hasher = SecretKeyHasher(self.config)

    @property
    def auth_dir(self) -> Path:
        return self.config.current().auth_dir

    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        key: str | None = "",
        peer_ip: str = "127.0.0.1",
    ) -> MgmtResponse:
        """Send one request; `key=""` uses the management key and `key=None` sends none."""
        all_headers = {"Content-Type": "application/json", "Connection": "close"}
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key or self.management_key}"
        all_headers.update(headers or {})
        if body is None:
            body = jsonlib.dumps(json).encode() if json is not None else b""
        request = MgmtRequest.build(method, path, headers=all_headers, body=body, peer_ip=peer_ip)
        return self.service.handle(request)


def response_json(response: MgmtResponse) -> Any:
    """Decode a response body the way an HTTP client would."""
    return jsonlib.loads(response.content())


class FakeUpstream:
    """A loopback HTTP server that records requests and responds from a route table.

    `routes` maps a path to `(status, headers, body)`; unknown paths get 200 `{"ok": true}`.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers.items()),
                        "body": body,
                    }
                )
                status, headers, payload = upstream.routes.get(
                    self.path.split("?", 1)[0],
                    (200, {"Content-Type": "application/json"}, b'{"ok": true}'),
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The script mitmdump loads: cliproxy's addon chain, with the management addon placed after
# the key gate when the chain does not include it yet.
_PROXY_SCRIPT = """\
import sys
sys.path.insert(0, {root!r})
from addons.chain import build_addons
from addons.gate import KeyGate
from addons.listen import ensure_reverse_mode
from addons.management import Management

ensure_reverse_mode()
addons = build_addons()
if not any(isinstance(addon, Management) for addon in addons):
    gate = next(index for index, addon in enumerate(addons) if isinstance(addon, KeyGate))
    addons.insert(gate + 1, Management(addons[gate].runtime))
"""


class MgmtProxy:
    """A real `mitmdump` serving the key gate and the management addon on loopback.

    The OS keyring is disabled in the child (`PYTHON_KEYRING_BACKEND`), so the generated
    management key lands in the `management-key` file beside the config.
    """

    def __init__(self, directory: Path, config_text: str = MINIMAL_CONFIG, **options: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path = self.directory / "config.yaml"
        self.port = free_port()
        self.config_path.write_text(config_text.replace("port: 8317", f"port: {self.port}"))
        (self.directory / "auths").mkdir(exist_ok=True, mode=0o700)
        self.auth_dir = self.directory / "auths"

        script = self.directory / "mgmt_proxy_entry.py"
        script.write_text(_PROXY_SCRIPT.format(root=str(Path(__file__).resolve().parents[1])))
        env = dict(os.environ)
        env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
        env.pop(ENV_PASSWORD, None)

        command = [
            str(Path(sys.executable).with_name("mitmdump")),
            "--mode",
            f"reverse:http://127.0.0.1:9@127.0.0.1:{self.port}",
            "--set",
            f"cliproxy_config={self.config_path}",
            "--set",
            f"confdir={self.directory / '.mitmproxy'}",
            "--set",
            "flow_detail=0",
            "-s",
            str(script),
        ]
        for name, value in options.items():
            command += ["--set", f"{name}={value}"]

        self.log_path = self.directory / "mitmdump.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_ready()
        self.management_key = (self.directory / "management-key").read_text().strip()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mitmdump exited: {self.log_path.read_text()[-2000:]}")
            key_file = self.directory / "management-key"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    if key_file.exists():
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"mitmdump did not start: {self.log_path.read_text()[-2000:]}")

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request to the proxy and return status, headers and body."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=70)
        try:
            connection.request(method, path, body=body or None, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def send(self, method: str, path: str, body: bytes = b"") -> Any:
        """Send a Quotio-style management call: Bearer key, JSON type, `Connection: close`."""
        status, headers, data = self.request(
            method,
            "/v0/management" + path,
            body,
            {
                "Authorization": f"Bearer {self.management_key}",
                "Content-Type": "application/json",
                "Connection": "close",
            },
        )
        return ProxyReply(status, data, headers)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@dataclass
class ProxyReply:
    """One response from the proxy."""

    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return jsonlib.loads(self.body)
