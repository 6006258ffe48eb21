"""Request logs, error logs and the application log end to end, and that no file contains a secret."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import requests

from tests.fakes import Status, server_error
from tests.harness import PROXY_KEY, ProxyProcess, default_config, free_port
from tests.test_tap_usage import CLAUDE, GEMINI, GEMINI_SSE, rewrite_config, wait_for_records

MANAGEMENT_PASSWORD = "env-management-password-5f1d2c3b4a"
CONFIG_MANAGEMENT_KEY = "config-management-key-9a8b7c6d5e"
OAUTH_ACCESS_TOKEN = "oauth-access-token-claude-7e6d5c4b3a29"
OAUTH_REFRESH_TOKEN = "oauth-refresh-token-claude-1a2b3c4d5e6f"
CLAUDE_ACCOUNTS = ("claude-A", "claude-B", "claude-C", "claude-oauth")
# Files that hold secrets by design: the config, auth files and the generated management key.
SECRET_HOLDERS = ("config.yaml", "management-key")


def wait_for_files(directory: Path, pattern: str, count: int, timeout: float = 10.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while True:
        files = sorted(directory.glob(pattern))
        if len(files) >= count or time.monotonic() > deadline:
            return files
        time.sleep(0.05)


def proxy_files(directory: Path) -> list[Path]:
    """Return every file below `directory` except those that hold secrets by design."""
    files = []
    for root, _dirs, names in os.walk(directory):
        for name in names:
            path = Path(root) / name
            if name in SECRET_HOLDERS or (path.parent.name == "auths" and name.endswith(".json")):
                continue
            files.append(path)
    return files


def test_no_file_contains_a_secret(start_proxy, upstream, tmp_path):
    auth_dir = tmp_path / "auths"
    auth_dir.mkdir()
    (auth_dir / "claude-user@example.com.json").write_text(json.dumps({
        "type": "claude",
        "email": "user@example.com",
        "access_token": OAUTH_ACCESS_TOKEN,
        "refresh_token": OAUTH_REFRESH_TOKEN,
        "expired": "2099-01-01T00:00:00Z",
        "base_url": upstream.account_url("claude-oauth"),
    }))
    config = default_config(
        upstream, free_port(), auth_dir,
        **{
            "request-log": True,
            "logging-to-file": True,
            "remote-management": {"secret-key": CONFIG_MANAGEMENT_KEY},
            # Without retry rounds a request whose accounts all fail ends at once.
            "request-retry": 0,
        },
    )
    proxy = start_proxy(config=config, env={"MANAGEMENT_PASSWORD": MANAGEMENT_PASSWORD})
    generated_key = (proxy.directory / "management-key").read_text().strip()
    upstream_keys = [entry["api-key"] for entry in config["claude-api-key"] + config["gemini-api-key"]]
    secrets = [
        PROXY_KEY, MANAGEMENT_PASSWORD, CONFIG_MANAGEMENT_KEY, OAUTH_ACCESS_TOKEN,
        OAUTH_REFRESH_TOKEN, generated_key, *upstream_keys,
    ]
    body = {
        **CLAUDE,
        "messages": [{"role": "user", "content": f"my key is {PROXY_KEY}, token {OAUTH_ACCESS_TOKEN}"}],
        "metadata": {"api_key": "body-secret-in-a-named-field-0123"},
    }
    secrets.append("body-secret-in-a-named-field-0123")

    # Every Claude account once, buffered and streamed, with the key in each accepted place.
    for index in range(4):
        assert proxy.post("/v1/messages", body).status_code == 200
        streamed = proxy.post("/v1/messages", {**body, "stream": True}, key=None, headers={"x-api-key": PROXY_KEY})
        assert streamed.status_code == 200
    assert proxy.post(f"{GEMINI_SSE}&key={PROXY_KEY}", GEMINI, key=None).status_code == 200
    assert proxy.post("/v1/messages", body, key="wrong-" + PROXY_KEY).status_code == 401

    # An upstream error that echoes the credential it was sent, passed back to the client.
    for account, secret in zip(CLAUDE_ACCOUNTS, upstream_keys[:3] + [OAUTH_ACCESS_TOKEN]):
        upstream.set_default(account, Status(400, {"error": {"message": f"bad request for key {secret}"}}))
    for _ in range(4):
        assert proxy.post("/v1/messages", body).status_code == 400

    for key in (MANAGEMENT_PASSWORD, generated_key, CONFIG_MANAGEMENT_KEY):
        headers = {"authorization": f"Bearer {key}"}
        assert proxy.get("/v0/management/usage", key=None, headers=headers).status_code == 200
        assert proxy.get("/metrics", key=None, headers={"x-management-key": key}).status_code == 200

    # Error-only mode: failed requests become error-*.log files.
    rewrite_config(proxy, **{"request-log": False})
    assert proxy.post("/v1/messages", body).status_code == 400
    for account in CLAUDE_ACCOUNTS:
        upstream.set_default(account, server_error(500))
    assert proxy.post("/v1/messages", body).status_code in (429, 500, 502, 503)

    logs = proxy.directory / "logs"
    assert wait_for_files(logs, "error-*.log", 2)
    assert len(wait_for_records(proxy.directory, 16)) == 16
    proxy.stop()

    files = proxy_files(proxy.directory)
    names = {path.name for path in files}
    assert "usage.db" in names
    assert "main.log" in names
    assert len([name for name in names if name.startswith("v1-messages-")]) >= 12
    assert len([name for name in names if name.startswith("error-")]) == 2
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{path.relative_to(proxy.directory)} contains {secret!r}"


def test_request_log_file_sections(start_proxy, upstream):
    proxy = start_proxy(**{"request-log": True})
    response = proxy.post("/v1/messages", {**CLAUDE, "stream": True})
    request_id = response.headers["x-cliproxy-request-id"]
    [path] = wait_for_files(proxy.directory / "logs", f"*-{request_id}.log", 1)

    deadline = time.monotonic() + 10
    while "=== END ===" not in path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = path.read_text()
    sections = [line for line in text.splitlines() if line.startswith("=== ")]
    assert sections == [
        "=== REQUEST ===", "=== REQUEST HEADERS ===", "=== REQUEST BODY ===",
        "=== UPSTREAM ATTEMPT 1 ===", "=== RESPONSE HEADERS ===", "=== RESPONSE BODY ===",
        "=== END ===",
    ]
    assert response.text in text
    assert "URL: /v1/messages" in text
    assert "Status: 200" in text


def test_error_logs_keep_newest_failures(start_proxy, upstream):
    proxy = start_proxy(**{"error-logs-max-files": 3})
    for account in ("claude-A", "claude-B", "claude-C"):
        upstream.set_default(account, Status(400, {"error": {"message": "invalid request"}}))
    failed = [proxy.post("/v1/messages", CLAUDE).headers["x-cliproxy-request-id"] for _ in range(5)]
    upstream.reset()
    assert proxy.post("/v1/messages", CLAUDE).status_code == 200
    wait_for_records(proxy.directory, 6)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        names = sorted(path.name for path in (proxy.directory / "logs").glob("error-*.log"))
        if any(failed[-1] in name for name in names):
            break
        time.sleep(0.05)
    assert len(names) == 3
    assert [request_id for request_id in failed if any(request_id in name for name in names)] == failed[-3:]
    listed = proxy.get(
        "/v0/management/request-error-logs", key=None,
        headers={"authorization": f"Bearer {(proxy.directory / 'management-key').read_text().strip()}"},
    ).json()
    assert sorted(item["name"] for item in listed["files"]) == names


def test_request_log_switch_applies_live(start_proxy, upstream):
    proxy = start_proxy()
    quiet = proxy.post("/v1/messages", CLAUDE).headers["x-cliproxy-request-id"]
    rewrite_config(proxy, **{"request-log": True})
    logged = proxy.post("/v1/messages", CLAUDE).headers["x-cliproxy-request-id"]

    logs = proxy.directory / "logs"
    assert wait_for_files(logs, f"*-{logged}.log", 1)
    assert not list(logs.glob(f"*-{quiet}.log"))


def management_logs(proxy: ProxyProcess) -> dict:
    key = (proxy.directory / "management-key").read_text().strip()
    response = requests.get(
        proxy.base_url + "/v0/management/logs", headers={"authorization": f"Bearer {key}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_application_log_in_both_entries(start_proxy, upstream):
    for entry in ("mitmdump", "serve"):
        proxy = start_proxy(entry=entry, **{"logging-to-file": True})
        main_log = proxy.directory / "logs" / "main.log"
        assert "cliproxy loaded" in main_log.read_text(), entry
        lines = management_logs(proxy)["lines"]
        assert any("cliproxy loaded" in line for line in lines), entry
        assert not any("client connect" in line for line in lines), entry


def test_logging_to_file_applies_live(start_proxy, upstream):
    proxy = start_proxy()
    main_log = proxy.directory / "logs" / "main.log"
    assert not main_log.exists()
    rewrite_config(proxy, **{"logging-to-file": True})
    rewrite_config(proxy, **{"request-retry": 2})
    assert "config file changed" in main_log.read_text()


def padded_body(size: int) -> bytes:
    """Return a Claude request of exactly `size` bytes whose padding is easy to find in a file."""
    empty = len(json.dumps({**CLAUDE, "metadata": {"pad": ""}}))
    return json.dumps({**CLAUDE, "metadata": {"pad": "Q" * (size - empty)}}).encode()


def log_files(directory: Path) -> list[Path]:
    return sorted((directory / "logs").glob("*.log"))


def test_rejected_request_bodies_not_logged(start_proxy, upstream):
    # mitmproxy itself stops bodies over the limit plus one byte, so only a body of exactly
    # that size reaches the gate's 413 and the request hook.
    limit = 8 << 20
    proxy = start_proxy(**{"request-log": True, "body-size-limit-mb": limit >> 20})
    without_key = proxy.post("/v1/messages", padded_body(5 << 20), key=None)
    assert without_key.status_code == 401
    too_large = proxy.post("/v1/messages", padded_body(limit + 1))
    assert too_large.status_code == 413
    accepted = proxy.post("/v1/messages", CLAUDE)
    assert accepted.status_code == 200
    # The log writer runs in submission order, so the accepted request's END comes last.
    [accepted_log] = wait_for_files(
        proxy.directory / "logs", f"*-{accepted.headers['x-cliproxy-request-id']}.log", 1
    )
    deadline = time.monotonic() + 10
    while "=== END ===" not in accepted_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)

    for response in (without_key, too_large):
        request_id = response.headers["x-cliproxy-request-id"]
        [path] = [path for path in log_files(proxy.directory) if request_id in path.name]
        text = path.read_text()
        assert "not logged: cliproxy rejected the request" in text, path.name
        assert "QQQQQQQQ" not in text, path.name
        assert "=== END ===" in text, path.name
        assert path.stat().st_size < 16 * 1024, path.name

    # Error-only mode: the 413 of a known key gets a small error file, the 401 gets none.
    rewrite_config(proxy, **{"request-log": False})
    without_key = proxy.post("/v1/messages", padded_body(5 << 20), key=None)
    assert without_key.status_code == 401
    too_large = proxy.post("/v1/messages", padded_body(limit + 1))
    assert too_large.status_code == 413
    [error_log] = wait_for_files(
        proxy.directory / "logs", f"error-*-{too_large.headers['x-cliproxy-request-id']}.log", 1
    )
    assert "QQQQQQQQ" not in error_log.read_text()
    assert error_log.stat().st_size < 16 * 1024
    rejected_id = without_key.headers["x-cliproxy-request-id"]
    assert not [path for path in log_files(proxy.directory) if rejected_id in path.name]
    assert len(wait_for_records(proxy.directory, 5)) == 5
    assert sum(path.stat().st_size for path in log_files(proxy.directory)) < 64 * 1024
