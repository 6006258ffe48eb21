"""Entry points: mitmdump -s, mitmweb -s, cliproxy serve; first start and config errors."""

import os
import socket
import stat
import subprocess
import time

import pytest
import requests
import yaml

from tests.harness import BIN, ROOT, ProxyProcess, default_config, free_port

CLAUDE = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}

CLIPROXYAPI_CONFIG = """\
# Written by Quotio for CLIProxyAPI
host: "127.0.0.1"
port: {port}
auth-dir: "{auth_dir}"
proxy-url: ""
api-keys:
  - "quotio-local-6F1C2B9E-0A4D-4C51-9F3B-5E8A7D2C1B0F"
remote-management:
  allow-remote: false
  secret-key: ""
debug: false
logging-to-file: false
usage-statistics-enabled: true
routing:
  strategy: "round-robin"
quota-exceeded:
  switch-project: true
  switch-preview-model: true
request-retry: 3
max-retry-interval: 30
ws-auth: true
commercial-mode: false
oauth-excluded-models:
  claude: ["claude-3-*"]
# Custom Providers (managed by Quotio)
openai-compatibility:
  - name: "openrouter"
    base-url: "{base_url}"
    api-key-entries:
      - api-key: "sk-or-test"
    models:
      - name: "moonshotai/kimi-k2"
        alias: "kimi-k2"
"""


def listening_ports(pid: int) -> set[int]:
    """Return the TCP ports process `pid` listens on (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def healthz_status(port: int, wait: float = 20.0) -> int | None:
    """Poll `/healthz` until it returns 200 or `wait` seconds pass; return the last status."""
    deadline = time.monotonic() + wait
    status = None
    while time.monotonic() < deadline and status != 200:
        try:
            status = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code
        except requests.RequestException:
            time.sleep(0.1)
    return status


def proxy_pid(process: ProxyProcess) -> int:
    """The mitmdump process: the started one (the entry script re-executes in place)."""
    assert process.process is not None
    return process.process.pid


def test_plain_mitmdump_serves_reverse_mode(start_proxy, upstream):
    proxy = start_proxy(entry="mitmdump-plain")
    ports = listening_ports(proxy_pid(proxy))
    assert proxy.port in ports
    assert 8080 not in ports
    assert proxy.post("/v1/messages", CLAUDE).status_code == 200


def test_plain_mitmdump_listens_on_ipv6_loopback(start_proxy):
    proxy = start_proxy(entry="mitmdump-plain")
    response = requests.get(f"http://[::1]:{proxy.port}/healthz", timeout=5)
    assert response.status_code == 200


def test_config_from_environment(tmp_path, upstream):
    config = default_config(upstream, free_port(), tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [str(BIN / "mitmdump"), "-s", "addons/cliproxy.py"],
        cwd=ROOT, env={**os.environ, "CLIPROXY_CONFIG": str(path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        assert healthz_status(config["port"]) == 200
    finally:
        process.terminate()
        process.wait(10)


def test_non_reverse_mode_refused(tmp_path, upstream):
    config = default_config(upstream, free_port(), tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    result = subprocess.run(
        [str(BIN / "mitmdump"), "-s", "addons/cliproxy.py", "--mode", f"regular@127.0.0.1:{port}",
         "--set", f"cliproxy_config={path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert "./run.sh" in result.stdout + result.stderr
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_mitmweb_entry_serves(start_proxy, upstream):
    proxy = start_proxy(entry="mitmweb")
    response = proxy.post("/v1/messages", CLAUDE)
    assert response.status_code == 200
    assert "Hello from" in response.text


def test_cliproxy_serve_entry(start_proxy, upstream):
    proxy = start_proxy(entry="serve")
    response = proxy.post("/v1/messages", {**CLAUDE, "stream": True})
    assert response.status_code == 200
    assert "event: message_stop" in response.text
    assert 8080 not in listening_ports(proxy_pid(proxy))


def test_first_start_creates_config(tmp_path):
    path = tmp_path / "fresh" / "config.yaml"
    process = subprocess.Popen(
        [str(BIN / "cliproxy"), "--config", str(path), "serve"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not path.exists():
            time.sleep(0.05)
        assert path.exists()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        key = yaml.safe_load(path.read_text())["api-keys"][0]
        assert len(key) >= 32
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0]
    assert output.count(key) == 1
    assert "ANTHROPIC_API_KEY" in output


def test_invalid_config_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("port: 99999\napi-keys: [k]\n")
    result = subprocess.run(
        [str(BIN / "mitmdump"), "-s", "addons/cliproxy.py", "--mode", f"reverse:http://127.0.0.1:9@127.0.0.1:{free_port()}",
         "--set", f"cliproxy_config={path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "'port'" in output
    assert "99999" in output
    assert "1 to 65535" in output


def test_invalid_config_refused_by_serve(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("routing:\n  strategy: fastest\n")
    result = subprocess.run(
        [str(BIN / "cliproxy"), "--config", str(path), "serve"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "routing.strategy" in result.stderr
    assert "round-robin" in result.stderr


def test_cliproxyapi_config_loads_unchanged(start_proxy, upstream, tmp_path):
    port = free_port()
    text = CLIPROXYAPI_CONFIG.format(port=port, auth_dir=tmp_path / "auths", base_url=upstream.account_url("or") + "/v1")
    (tmp_path / "auths").mkdir()
    directory = tmp_path / "quotio"
    directory.mkdir()
    (directory / "config.yaml").write_text(text)
    proxy = ProxyProcess(directory=directory, config={"port": port})
    proxy.start()
    try:
        response = requests.post(
            proxy.base_url + "/v1/chat/completions",
            json={"model": "kimi-k2", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": "Bearer quotio-local-6F1C2B9E-0A4D-4C51-9F3B-5E8A7D2C1B0F"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert upstream.requests()[0].json["model"] == "moonshotai/kimi-k2"
        assert (directory / "config.yaml").read_text() == text
    finally:
        proxy.stop()


@pytest.mark.parametrize("bad", ["key", "value", "fix"])
def test_config_error_names_key_value_fix(tmp_path, bad):
    from config import ConfigError, ConfigFile

    path = tmp_path / "config.yaml"
    path.write_text("request-retry: lots\n")
    with pytest.raises(ConfigError) as error:
        ConfigFile(path).load()
    expected = {"key": "'request-retry'", "value": "'lots'", "fix": "whole number"}[bad]
    assert expected in str(error.value)


def test_port_in_use_reported(tmp_path, upstream):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = default_config(upstream, port, tmp_path)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        result = subprocess.run(
            [str(BIN / "cliproxy"), "--config", str(path), "serve"], cwd=ROOT, capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr


def test_explicit_reverse_mode_without_address_uses_config(tmp_path, upstream):
    config = default_config(upstream, free_port(), tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [str(BIN / "mitmdump"), "-s", "addons/cliproxy.py", "--mode", "reverse:http://127.0.0.1:9",
         "--set", f"cliproxy_config={path}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        assert healthz_status(config["port"]) == 200
        assert 8080 not in listening_ports(process.pid)
    finally:
        process.terminate()
        process.wait(10)


def test_empty_config_edit_ignored(proxy):
    proxy.config_path.write_text("")
    time.sleep(2.5)
    assert proxy.get("/v1/models").status_code == 200
    assert "is empty" in proxy.log_text()
