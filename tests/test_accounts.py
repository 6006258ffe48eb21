"""OAuth account files as upstream accounts: credentials per kind, hot reload of the auth dir."""

import json
import time

import pytest

from tests.harness import default_config, free_port

CLAUDE = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
RESPONSES = {"model": "gpt-5-codex", "input": "hi"}


def only_file_accounts(upstream, tmp_path, **overrides):
    """A config whose only accounts are auth files (no API-key entries)."""
    config = default_config(upstream, free_port(), tmp_path / "auths", **overrides)
    for section in ("claude-api-key", "codex-api-key", "gemini-api-key", "openai-compatibility"):
        config[section] = []
    config["upstream-base-url"] = {
        "claude": upstream.account_url("claude-oauth"),
        "codex": upstream.account_url("codex-oauth") + "/backend-api/codex",
    }
    return config


def write_auth(directory, name, data):
    path = directory / name
    path.write_text(json.dumps(data))
    path.chmod(0o600)
    return path


@pytest.fixture
def file_proxy(start_proxy, upstream, tmp_path):
    (tmp_path / "auths").mkdir()
    write_auth(tmp_path / "auths", "claude-user@example.com.json", {
        "type": "claude", "email": "user@example.com", "access_token": "sk-ant-oat01-claude-token",
        "refresh_token": "rt", "expired": "2099-01-01T00:00:00Z",
    })
    write_auth(tmp_path / "auths", "codex-user@example.com-plus.json", {
        "type": "codex", "email": "user@example.com", "access_token": "codex-access-token",
        "account_id": "acct-1234", "refresh_token": "rt", "expired": "2099-01-01T00:00:00Z",
    })
    return start_proxy(config=only_file_accounts(upstream, tmp_path))


def test_claude_oauth_uses_bearer_and_beta(file_proxy, upstream):
    response = file_proxy.post("/v1/messages", CLAUDE, headers={"anthropic-beta": "claude-code-20250219"})
    assert response.status_code == 200, response.text
    sent = upstream.requests()[0]
    assert sent.header("authorization") == "Bearer sk-ant-oat01-claude-token"
    assert sent.header("x-api-key") is None
    assert sent.header("anthropic-beta") == "claude-code-20250219,oauth-2025-04-20"


def test_codex_oauth_stream(file_proxy, upstream):
    response = file_proxy.post("/v1/responses", {**RESPONSES, "stream": True})
    assert response.status_code == 200, response.text
    assert "response.completed" in response.text
    sent = upstream.requests()[0]
    assert sent.path == "/backend-api/codex/responses"
    assert sent.header("authorization") == "Bearer codex-access-token"
    assert sent.header("chatgpt-account-id") == "acct-1234"


def test_codex_oauth_non_stream_collected(file_proxy, upstream):
    response = file_proxy.post("/v1/responses", RESPONSES)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["object"] == "response"
    assert data["usage"]["output_tokens"] == 7
    assert upstream.requests()[0].json["stream"] is True


def test_auth_file_added_and_removed_live(start_proxy, upstream, tmp_path):
    (tmp_path / "auths").mkdir()
    proxy = start_proxy(config=only_file_accounts(upstream, tmp_path))
    assert proxy.post("/v1/messages", CLAUDE).status_code == 404

    path = write_auth(tmp_path / "auths", "claude-new@example.com.json", {
        "type": "claude", "access_token": "sk-ant-oat01-new", "expired": "2099-01-01T00:00:00Z",
    })
    deadline = time.monotonic() + 5
    status = 0
    while time.monotonic() < deadline and status != 200:
        status = proxy.post("/v1/messages", CLAUDE).status_code
        time.sleep(0.2)
    assert status == 200

    path.unlink()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and status == 200:
        status = proxy.post("/v1/messages", CLAUDE).status_code
        time.sleep(0.2)
    assert status == 404


def test_disabled_auth_file_skipped(start_proxy, upstream, tmp_path):
    (tmp_path / "auths").mkdir()
    write_auth(tmp_path / "auths", "claude-off@example.com.json", {
        "type": "claude", "access_token": "sk-ant-oat01-off", "disabled": True,
    })
    proxy = start_proxy(config=only_file_accounts(upstream, tmp_path))
    assert proxy.post("/v1/messages", CLAUDE).status_code == 404
    assert upstream.count() == 0


def test_broken_config_edit_keeps_last_good(proxy, upstream):
    proxy.config_path.write_text("port: [not, a, port\n")
    time.sleep(2.5)
    assert proxy.post("/v1/messages", CLAUDE).status_code == 200
    assert "keeping the last good config" in proxy.log_text()
