"""Usage records end to end: tokens per wire format, outcomes, attempts, live switch, restart.

Each test reads the records the proxy wrote from its SQLite database (`usage.db` in the config
directory), opened read-only.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakes import USAGE, DropAfter, Gzip, NoUsage, Slow, rate_limited
from tests.harness import BIN, PROXY_KEY, ROOT, ProxyProcess, default_config, free_port

CLAUDE = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES = {"model": "gpt-5-codex", "input": "hi"}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
GEMINI_JSON = "/v1beta/models/gemini-2.5-pro:generateContent"
GEMINI_SSE = "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
MANAGEMENT_PASSWORD = "tap-test-management-password-0123456789"

# What the store keeps for the fake's usage fields, in its own meaning: `input_tokens` counts
# every prompt token (cache reads and writes included) and `output_tokens` every generated
# token (Gemini's thoughts included). tests/fakes/usage.py describes each wire format.
ANTHROPIC_TOKENS = {
    "input_tokens": USAGE.input + USAGE.cache_read + USAGE.cache_write,
    "output_tokens": USAGE.output,
    "cache_read_tokens": USAGE.cache_read,
    "cache_write_tokens": USAGE.cache_write,
    "reasoning_tokens": 0,
}
OPENAI_TOKENS = {
    "input_tokens": USAGE.input,
    "output_tokens": USAGE.output,
    "cache_read_tokens": USAGE.cache_read,
    "cache_write_tokens": 0,
    "reasoning_tokens": USAGE.reasoning,
}
GEMINI_TOKENS = {
    "input_tokens": USAGE.input,
    "output_tokens": USAGE.output + USAGE.reasoning,
    "cache_read_tokens": USAGE.cache_read,
    "cache_write_tokens": 0,
    "reasoning_tokens": USAGE.reasoning,
}

TOKEN_CASES = [
    ("/v1/messages", CLAUDE, ANTHROPIC_TOKENS),
    ("/v1/messages", {**CLAUDE, "stream": True}, ANTHROPIC_TOKENS),
    ("/v1/chat/completions", CHAT, OPENAI_TOKENS),
    (
        "/v1/chat/completions",
        {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        OPENAI_TOKENS,
    ),
    ("/v1/responses", RESPONSES, OPENAI_TOKENS),
    ("/v1/responses", {**RESPONSES, "stream": True}, OPENAI_TOKENS),
    (GEMINI_JSON, GEMINI, GEMINI_TOKENS),
    (GEMINI_SSE, GEMINI, GEMINI_TOKENS),
]
TOKEN_IDS = [
    "anthropic", "anthropic-stream", "chat", "chat-stream", "responses", "responses-stream",
    "gemini", "gemini-stream",
]


def database_rows(directory: Path) -> list[dict[str, Any]]:
    path = directory / "usage.db"
    if not path.exists():
        return []
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM requests ORDER BY id")]


def wait_for_records(directory: Path, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Return the records once at least `count` are written (the writer is a background thread)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = database_rows(directory)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def record_for(proxy: ProxyProcess, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for row in database_rows(proxy.directory):
            if row["request_id"] == request_id:
                return row
        if time.monotonic() > deadline:
            raise AssertionError(f"no record for request {request_id}:\n{proxy.log_text()[-3000:]}")
        time.sleep(0.05)


def wait_for_log(proxy: ProxyProcess, text: str, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while proxy.log_text().count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not logged {count} times:\n{proxy.log_text()[-3000:]}")
        time.sleep(0.05)


def rewrite_config(proxy: ProxyProcess, **changes: Any) -> None:
    """Change config.yaml and wait until the running proxy applied it."""
    before = proxy.log_text().count("config file changed")
    proxy.write_config({**proxy.config, **changes})
    wait_for_log(proxy, "config file changed", before + 1)


@pytest.fixture(scope="module")
def usage_proxy(upstream_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tap-usage")
    (directory / "auths").mkdir()
    config = default_config(upstream_server, free_port(), directory / "auths")
    proxy = ProxyProcess(directory=directory, config=config).start()
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("path, body, expected", TOKEN_CASES, ids=TOKEN_IDS)
def test_tokens_match_upstream_usage(usage_proxy, upstream, path, body, expected):
    response = usage_proxy.post(path, body)
    assert response.status_code == 200, response.text
    record = record_for(usage_proxy, response.headers["x-cliproxy-request-id"])

    assert record["usage_known"] == 1
    for column, value in expected.items():
        assert record[column] == value, column
    assert record["total_tokens"] == expected["input_tokens"] + expected["output_tokens"]
    assert record["outcome"] == "success"
    assert record["status"] == 200
    assert record["stream"] == int(body.get("stream", False) or path.endswith("alt=sse"))


@pytest.mark.parametrize("path, body, expected", TOKEN_CASES[:2], ids=TOKEN_IDS[:2])
def test_record_describes_request(usage_proxy, upstream, path, body, expected):
    response = usage_proxy.post(path, body)
    record = record_for(usage_proxy, response.headers["x-cliproxy-request-id"])

    assert record["route"] == "anthropic:generate"
    assert record["dialect"] == "anthropic"
    assert record["key_label"].startswith("key-")
    assert PROXY_KEY not in json.dumps(record)
    assert record["requested_model"] == "claude-sonnet-4-5"
    assert record["upstream_model"] == "claude-sonnet-4-5"
    assert record["provider"] == "claude"
    assert record["account"].startswith("claude-api-key#")
    assert json.loads(record["attempts"]) == [
        {"account": record["account"], "status": 200, "cooldown_seconds": 0.0, "reason": ""}
    ]
    assert record["bytes_in"] == len(json.dumps(body))
    assert record["bytes_out"] == len(response.content)
    assert 0 < record["ttfb_ms"] <= record["latency_ms"]


@pytest.mark.parametrize(
    "path, body, drop",
    [
        # Anthropic's message_start already carries input usage; this stream's carries none.
        ("/v1/messages", {**CLAUDE, "stream": True}, 2),
        ("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}}, 2),
        ("/v1/responses", {**RESPONSES, "stream": True}, 2),
        (GEMINI_SSE, GEMINI, 2),
    ],
    ids=["anthropic", "chat", "responses", "gemini"],
)
def test_stream_cut_before_usage_is_unknown(start_proxy, upstream, path, body, drop):
    proxy = start_proxy(routing={"strategy": "fill-first"})
    for account in ("codex-A", "gemini-A"):
        upstream.enqueue(account, DropAfter(drop))
    upstream.enqueue("claude-A", DropAfter(drop) + NoUsage())
    response = proxy.post(path, body, stream=True)
    request_id = response.headers["x-cliproxy-request-id"]
    # The proxy sends an error event, then ends the response as abruptly as the upstream did.
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        response.content
    record = record_for(proxy, request_id)

    assert record["usage_known"] == 0
    assert record["total_tokens"] == 0
    assert record["outcome"] == "upstream_error"
    assert record["status"] == 200


@pytest.mark.parametrize("path, body, expected", [TOKEN_CASES[1], TOKEN_CASES[3]], ids=["anthropic", "chat"])
def test_gzip_stream_tokens(start_proxy, upstream, path, body, expected):
    proxy = start_proxy(routing={"strategy": "fill-first"})
    upstream.enqueue("claude-A", Gzip())
    upstream.enqueue("codex-A", Gzip())
    response = proxy.post(path, body)
    assert response.headers["content-encoding"] == "gzip"
    record = record_for(proxy, response.headers["x-cliproxy-request-id"])

    assert record["usage_known"] == 1
    for column, value in expected.items():
        assert record[column] == value, column


def test_stream_without_usage_option_is_unknown(usage_proxy, upstream):
    response = usage_proxy.post("/v1/chat/completions", {**CHAT, "stream": True})
    record = record_for(usage_proxy, response.headers["x-cliproxy-request-id"])
    assert record["usage_known"] == 0
    assert record["outcome"] == "success"


def test_failover_attempts_recorded(start_proxy, upstream):
    proxy = start_proxy(routing={"strategy": "fill-first"})
    upstream.enqueue("claude-A", rate_limited("retry-after-seconds", 30))
    response = proxy.post("/v1/messages", CLAUDE)
    assert response.status_code == 200
    record = record_for(proxy, response.headers["x-cliproxy-request-id"])

    attempts = json.loads(record["attempts"])
    assert [(attempt["account"], attempt["status"]) for attempt in attempts] == [
        ("claude-api-key#0", 429),
        ("claude-api-key#1", 200),
    ]
    assert attempts[0]["cooldown_seconds"] >= 29
    assert record["account"] == "claude-api-key#1"
    assert record["usage_known"] == 1


def test_gate_rejection_recorded(usage_proxy, upstream):
    response = usage_proxy.post("/v1/messages", CLAUDE, key="sk-not-a-proxy-key-000000000000")
    assert response.status_code == 401
    record = record_for(usage_proxy, response.headers["x-cliproxy-request-id"])

    assert record["outcome"] == "rejected"
    assert record["failed"] == 1
    assert record["key_label"] == ""
    assert record["account"] == ""
    assert record["usage_known"] == 0


def test_client_disconnect_recorded(usage_proxy, upstream):
    upstream.set_default("claude-A", Slow(0.2, events=30))
    upstream.set_default("claude-B", Slow(0.2, events=30))
    upstream.set_default("claude-C", Slow(0.2, events=30))
    body = json.dumps({**CLAUDE, "stream": True}).encode()
    head = (
        f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {PROXY_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", usage_proxy.port), timeout=10) as client:
        client.sendall(head + body)
        received = b""
        while b"message_start" not in received:
            received += client.recv(65536)
    request_id = received.split(b"x-cliproxy-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()
    record = record_for(usage_proxy, request_id)

    assert record["outcome"] == "client_disconnected"
    assert record["failed"] == 0
    assert record["status"] == 200
    assert record["latency_ms"] < 5000


def test_statistics_switch_applies_live(start_proxy, upstream):
    proxy = start_proxy()
    first = proxy.post("/v1/messages", CLAUDE).headers["x-cliproxy-request-id"]
    record_for(proxy, first)

    rewrite_config(proxy, **{"usage-statistics-enabled": False})
    skipped = proxy.post("/v1/messages", CLAUDE).headers["x-cliproxy-request-id"]
    rewrite_config(proxy, **{"usage-statistics-enabled": True})
    last = proxy.post("/v1/messages", CLAUDE).headers["x-cliproxy-request-id"]
    record_for(proxy, last)

    ids = [row["request_id"] for row in database_rows(proxy.directory)]
    assert ids == [first, last]
    assert skipped not in ids


def test_statistics_survive_restart_and_export(start_proxy, upstream, tmp_path):
    headers = {"authorization": f"Bearer {MANAGEMENT_PASSWORD}"}
    env = {"MANAGEMENT_PASSWORD": MANAGEMENT_PASSWORD}
    proxy = start_proxy(env=env)
    sent = [proxy.post("/v1/messages", CLAUDE).headers["x-cliproxy-request-id"] for _ in range(3)]
    wait_for_records(proxy.directory, 3)
    proxy.stop()

    proxy.start()
    sent += [proxy.post(GEMINI_JSON, GEMINI).headers["x-cliproxy-request-id"] for _ in range(2)]
    assert [row["request_id"] for row in wait_for_records(proxy.directory, 5)] == sent
    usage = proxy.get("/v0/management/usage", key=None, headers=headers).json()
    export = proxy.get("/v0/management/usage/export", key=None, headers=headers).json()

    fresh = start_proxy(env=env)
    for expected_added in (5, 0):
        result = requests.post(
            fresh.base_url + "/v0/management/usage/import", json=export, headers=headers, timeout=10
        ).json()
        assert result["added"] == expected_added
        assert result["total_requests"] == 5
    imported = fresh.get("/v0/management/usage", key=None, headers=headers).json()

    assert usage["usage"]["total_requests"] == 5
    assert usage["usage"]["total_tokens"] == 3 * 23 + 2 * 23
    assert imported["usage"]["total_requests"] == usage["usage"]["total_requests"]
    assert imported["usage"]["total_tokens"] == usage["usage"]["total_tokens"]
    assert imported["usage"]["input_tokens"] == usage["usage"]["input_tokens"]
    assert imported["usage"]["output_tokens"] == usage["usage"]["output_tokens"]


def test_usage_command_prints_totals(start_proxy, upstream):
    proxy = start_proxy(routing={"strategy": "fill-first"})
    for _ in range(2):
        proxy.post("/v1/messages", CLAUDE)
    wait_for_records(proxy.directory, 2)

    result = subprocess.run(
        [str(BIN / "cliproxy"), "usage", "--config", str(proxy.config_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Today"
    cells = next(line for line in lines if "claude-sonnet-4-5" in line).split()
    assert cells[0].startswith("key-")
    assert cells[1:5] == ["claude-sonnet-4-5", "claude-api-key#0", "2", "0"]
    assert "This month" in result.stdout
    assert PROXY_KEY not in result.stdout


@pytest.fixture
def code_assist_proxy(start_proxy, upstream, tmp_path):
    auth_dir = tmp_path / "code-assist-auths"
    auth_dir.mkdir()
    (auth_dir / "gemini-user@example.com.json").write_text(json.dumps({
        "type": "gemini",
        "email": "user@example.com",
        "project_id": "project-1",
        "base_url": upstream.account_url("gca-A"),
        "token": {
            "access_token": "ya29.code-assist-access-token-0123456789",
            "refresh_token": "1//code-assist-refresh-token-0123456789",
            "expiry": "2099-01-01T00:00:00Z",
        },
    }))
    config = default_config(upstream, free_port(), auth_dir)
    config["gemini-api-key"] = []
    return start_proxy(config=config)


@pytest.mark.parametrize("path", [GEMINI_JSON, GEMINI_SSE], ids=["json", "stream"])
def test_code_assist_tokens_match_upstream_usage(code_assist_proxy, upstream, path):
    response = code_assist_proxy.post(path, GEMINI)
    assert response.status_code == 200, response.text
    record = record_for(code_assist_proxy, response.headers["x-cliproxy-request-id"])

    assert record["provider"] == "gemini-cli"
    assert record["account"] == "gemini-user@example.com.json"
    assert len(record["auth_index"]) == 16
    assert record["usage_known"] == 1
    for column, value in GEMINI_TOKENS.items():
        assert record[column] == value, column
