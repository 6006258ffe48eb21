"""Tests of the fake provider upstreams in tests/fakes, with plain HTTP clients and the real SDKs."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from backports import zstd

from tests.fakes import (
    ANTHROPIC_START_OUTPUT_TOKENS,
    ANTHROPIC_USAGE,
    CHAT_USAGE,
    COUNT_TOKENS,
    CRLF,
    GEMINI_USAGE,
    RESPONSES_USAGE,
    USAGE,
    UTF8_SAMPLE,
    Delay,
    DropAfter,
    FakeUpstream,
    Gzip,
    NoUsage,
    Omit,
    Slow,
    SplitUtf8,
    Status,
    StreamError,
    forbidden,
    invalid_request,
    model_not_found,
    payment_required,
    rate_limited,
    server_error,
    unauthorized,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

ANTHROPIC_BODY = {"model": "claude-test", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
CHAT_BODY = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES_BODY = {"model": "gpt-test", "input": "hi"}
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
CODE_ASSIST_BODY = {"model": "gemini-test", "project": "proj-1", "request": GEMINI_BODY}

# Route, body, and the request headers for each dialect's success and error responses.
ROUTES = {
    "anthropic": ("/v1/messages", ANTHROPIC_BODY, {}),
    "chat": ("/v1/chat/completions", CHAT_BODY, {}),
    "responses": ("/v1/responses", RESPONSES_BODY, {}),
    "codex": ("/backend-api/codex/responses", RESPONSES_BODY, {"chatgpt-account-id": "acc-1"}),
    "gemini": ("/v1beta/models/gemini-test:generateContent", GEMINI_BODY, {}),
    "code_assist": ("/v1internal:generateContent", CODE_ASSIST_BODY, {}),
}


@pytest.fixture(scope="module")
def up() -> Any:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(up: FakeUpstream) -> None:
    up.reset()


def request(
    up: FakeUpstream,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """Send one request on a new connection; return status, lower-cased headers and raw body."""
    connection = http.client.HTTPConnection("127.0.0.1", up.port, timeout=5)
    payload = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    connection.request(method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, {name.lower(): value for name, value in response.getheaders()}, data


def post(up: FakeUpstream, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return request(up, "POST", path, body, headers)


def sse_events(data: bytes) -> list[tuple[str | None, str]]:
    """Parse SSE text into (event name, data) pairs; comment frames come back as ("comment", text)."""
    events = []
    for block in data.decode().replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name = None
        lines = []
        for line in block.split("\n"):
            if line.startswith(":"):
                events.append(("comment", line[1:].strip()))
            elif line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                lines.append(line[len("data: "):])
        if lines:
            events.append((name, "\n".join(lines)))
    return events


def sse_json(data: bytes) -> list[dict[str, Any]]:
    """Return the JSON payloads of the data events, skipping comments and [DONE]."""
    return [json.loads(payload) for name, payload in sse_events(data) if name != "comment" and payload != "[DONE]"]


def raw_exchange(up: FakeUpstream, path: str, body: dict[str, Any]) -> tuple[bytes, list[bytes], bool]:
    """POST over a raw socket; return the response head, the chunk payloads, and whether the final chunk came."""
    payload = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", up.port), timeout=5) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
        )
        received = b""
        while not received.endswith(b"\r\n0\r\n\r\n"):
            data = sock.recv(65536)
            if not data:
                break
            received += data
    head, _, rest = received.partition(b"\r\n\r\n")
    chunks = []
    terminated = False
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            terminated = True
            break
        chunks.append(rest[:size])
        rest = rest[size + 2:]
    return head, chunks, terminated


# ----- server basics -----


def test_urls_use_port_and_account(up: FakeUpstream) -> None:
    assert up.base_url == f"http://127.0.0.1:{up.port}"
    assert up.account_url("A") == f"http://127.0.0.1:{up.port}/acct/A"


def test_head_keeps_connection(up: FakeUpstream) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", up.port, timeout=5)
    connection.request("HEAD", "/acct/A")
    head = connection.getresponse()
    head.read()
    first_socket = connection.sock
    connection.request("POST", "/acct/A/v1/messages", body=json.dumps(ANTHROPIC_BODY))
    second = connection.getresponse()
    second.read()
    assert head.status == 200
    assert second.status == 200
    assert connection.sock is first_socket
    connection.close()


def test_unknown_path_is_404_json(up: FakeUpstream) -> None:
    status, headers, body = request(up, "GET", "/acct/A/nothing/here")
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert "error" in json.loads(body)


def test_accepted_sockets_use_nodelay(up: FakeUpstream) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", up.port, timeout=5)
    connection.request("HEAD", "/")
    connection.getresponse().read()
    client_address = connection.sock.getsockname()
    # Reads the server side of this connection, because the option is not visible from the client.
    server_sockets = [
        writer.get_extra_info("socket") for writer in list(up._writers)
        if writer.get_extra_info("peername") == client_address
    ]
    nodelay = server_sockets[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    connection.close()
    assert len(server_sockets) == 1
    assert nodelay == 1


# ----- Anthropic -----


def test_anthropic_json_response(up: FakeUpstream) -> None:
    status, headers, body = post(up, "/acct/A/v1/messages?beta=true", ANTHROPIC_BODY)
    message = json.loads(body)
    assert status == 200
    assert int(headers["content-length"]) == len(body)
    assert message["content"] == [{"type": "text", "text": "Hello from A."}]
    assert message["model"] == "claude-test"
    assert message["usage"] == ANTHROPIC_USAGE


def test_anthropic_default_account_text(up: FakeUpstream) -> None:
    _, _, body = post(up, "/v1/messages", ANTHROPIC_BODY)
    assert json.loads(body)["content"][0]["text"] == "Hello from upstream."


def test_anthropic_stream_events(up: FakeUpstream) -> None:
    status, headers, body = post(up, "/acct/A/v1/messages", {**ANTHROPIC_BODY, "stream": True})
    events = sse_events(body)
    names = [name for name, _ in events]
    payloads = [json.loads(data) for _, data in events]
    text = "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert headers["transfer-encoding"] == "chunked"
    assert names == [
        "message_start", "content_block_start", "ping",
        "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]
    assert text == "Hello from A."
    assert payloads[0]["message"]["usage"]["input_tokens"] == USAGE.input
    assert payloads[0]["message"]["usage"]["output_tokens"] == ANTHROPIC_START_OUTPUT_TOKENS
    assert payloads[-2]["usage"] == ANTHROPIC_USAGE


def test_anthropic_count_tokens(up: FakeUpstream) -> None:
    status, _, body = post(up, "/acct/A/v1/messages/count_tokens", {"model": "m", "messages": []})
    assert status == 200
    assert json.loads(body) == {"input_tokens": COUNT_TOKENS}


def test_anthropic_rejects_missing_max_tokens(up: FakeUpstream) -> None:
    status, _, body = post(up, "/v1/messages", {"model": "m", "messages": []})
    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "headers", "key", "first_field"),
    [
        ("/v1/models", {"anthropic-version": "2023-06-01"}, "data", "type"),
        ("/v1/models", {"authorization": "Bearer k"}, "data", "object"),
        ("/v1beta/models", {}, "models", "name"),
        ("/v1/models", {"x-goog-api-key": "k"}, "models", "name"),
    ],
)
def test_models_list_shapes(up: FakeUpstream, path: str, headers: dict[str, str], key: str, first_field: str) -> None:
    status, _, body = request(up, "GET", "/acct/A" + path, headers=headers)
    entries = json.loads(body)[key]
    assert status == 200
    assert first_field in entries[0]


# ----- OpenAI Chat and Responses -----


def test_chat_json_response(up: FakeUpstream) -> None:
    status, _, body = post(up, "/acct/B/v1/chat/completions", CHAT_BODY)
    completion = json.loads(body)
    assert status == 200
    assert completion["choices"][0]["message"]["content"] == "Hello from B."
    assert completion["model"] == "gpt-test"
    assert completion["usage"] == CHAT_USAGE


def test_chat_stream_with_usage(up: FakeUpstream) -> None:
    body = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
    _, _, data = post(up, "/acct/B/v1/chat/completions", body)
    events = sse_events(data)
    chunks = sse_json(data)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert events[-1] == (None, "[DONE]")
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == CHAT_USAGE
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert text == "Hello from B."


def test_chat_stream_without_usage_option(up: FakeUpstream) -> None:
    _, _, data = post(up, "/acct/B/v1/chat/completions", {**CHAT_BODY, "stream": True})
    assert all("usage" not in chunk for chunk in sse_json(data))


def test_legacy_completions_response(up: FakeUpstream) -> None:
    status, _, body = post(up, "/acct/B/v1/completions", {"model": "m", "prompt": "hi"})
    assert status == 200
    assert json.loads(body)["choices"][0]["text"] == "Hello from B."


def test_responses_json_response(up: FakeUpstream) -> None:
    status, _, body = post(up, "/acct/C/v1/responses", RESPONSES_BODY)
    response = json.loads(body)
    assert status == 200
    assert response["output"][0]["content"][0]["text"] == "Hello from C."
    assert response["model"] == "gpt-test"
    assert response["usage"] == RESPONSES_USAGE


RESPONSES_EVENTS = [
    "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    "response.output_text.delta", "response.output_text.delta", "response.output_text.delta",
    "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed",
]


def test_responses_stream_events(up: FakeUpstream) -> None:
    _, _, data = post(up, "/acct/C/v1/responses", {**RESPONSES_BODY, "stream": True})
    events = sse_events(data)
    payloads = sse_json(data)
    assert [name for name, _ in events] == RESPONSES_EVENTS
    assert [p["sequence_number"] for p in payloads] == list(range(len(RESPONSES_EVENTS)))
    assert payloads[-2]["item"]["content"][0]["text"] == "Hello from C."
    assert payloads[-1]["response"]["usage"] == RESPONSES_USAGE


def test_codex_requires_account_header(up: FakeUpstream) -> None:
    status, _, body = post(up, "/acct/C/backend-api/codex/responses", RESPONSES_BODY)
    assert status == 401
    assert "chatgpt-account-id" in json.loads(body)["error"]["message"]


def test_codex_always_streams(up: FakeUpstream) -> None:
    status, headers, data = post(
        up, "/acct/C/backend-api/codex/responses", {**RESPONSES_BODY, "stream": False}, {"chatgpt-account-id": "acc"}
    )
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    assert [name for name, _ in sse_events(data)] == RESPONSES_EVENTS


# ----- Gemini and Code Assist -----


@pytest.mark.parametrize("version", ["v1", "v1beta"])
def test_gemini_generate_response(up: FakeUpstream, version: str) -> None:
    status, _, body = post(up, f"/acct/G/{version}/models/gemini-test:generateContent", GEMINI_BODY)
    generated = json.loads(body)
    candidate = generated["candidates"][0]
    assert status == 200
    assert candidate["content"]["parts"][0]["text"] == "Hello from G."
    assert candidate["finishReason"] == "STOP"
    assert generated["modelVersion"] == "gemini-test"
    assert generated["usageMetadata"] == GEMINI_USAGE


def test_gemini_stream_sse(up: FakeUpstream) -> None:
    _, headers, data = post(up, "/acct/G/v1beta/models/gemini-test:streamGenerateContent?alt=sse", GEMINI_BODY)
    chunks = sse_json(data)
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert headers["content-type"] == "text/event-stream"
    assert data.endswith(b"}\r\n\r\n")
    assert text == "Hello from G."
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"] == GEMINI_USAGE
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])


def test_gemini_stream_json_array(up: FakeUpstream) -> None:
    _, headers, data = post(up, "/acct/G/v1beta/models/gemini-test:streamGenerateContent", GEMINI_BODY)
    chunks = json.loads(data)
    assert headers["content-type"] == "application/json"
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_gemini_schema_response(up: FakeUpstream) -> None:
    schema = {
        "type": "OBJECT",
        "properties": {"complexity_reasoning": {"type": "STRING"}, "complexity_score": {"type": "INTEGER"}},
        "required": ["complexity_reasoning", "complexity_score"],
    }
    body = {**GEMINI_BODY, "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema}}
    _, _, data = post(up, "/v1beta/models/gemini-3.5-flash-lite:generateContent", body)
    routed = json.loads(json.loads(data)["candidates"][0]["content"]["parts"][0]["text"])
    assert routed["complexity_score"] >= 1
    assert isinstance(routed["complexity_reasoning"], str)


def test_gemini_count_tokens(up: FakeUpstream) -> None:
    status, _, body = post(up, "/v1/models/gemini-test:countTokens", GEMINI_BODY)
    assert status == 200
    assert json.loads(body) == {"totalTokens": COUNT_TOKENS}


def test_code_assist_wraps_json(up: FakeUpstream) -> None:
    status, _, body = post(up, "/acct/G/v1internal:generateContent", CODE_ASSIST_BODY)
    inner = json.loads(body)["response"]
    assert status == 200
    assert inner["candidates"][0]["content"]["parts"][0]["text"] == "Hello from G."
    assert inner["usageMetadata"] == GEMINI_USAGE


def test_code_assist_wraps_stream(up: FakeUpstream) -> None:
    _, _, data = post(up, "/acct/G/v1internal:streamGenerateContent?alt=sse", CODE_ASSIST_BODY)
    chunks = sse_json(data)
    assert all("response" in chunk for chunk in chunks)
    assert chunks[-1]["response"]["candidates"][0]["finishReason"] == "STOP"


def test_code_assist_requires_project(up: FakeUpstream) -> None:
    body = {key: value for key, value in CODE_ASSIST_BODY.items() if key != "project"}
    status, _, data = post(up, "/v1internal:generateContent", body)
    assert status == 400
    assert json.loads(data)["error"]["status"] == "INVALID_ARGUMENT"


def test_code_assist_count_tokens(up: FakeUpstream) -> None:
    status, _, body = post(up, "/v1internal:countTokens", {"request": GEMINI_BODY})
    assert status == 200
    assert json.loads(body) == {"totalTokens": COUNT_TOKENS}


# ----- recording -----


def test_record_fields(up: FakeUpstream) -> None:
    post(up, "/acct/A/v1/messages?beta=true", ANTHROPIC_BODY, {"X-Api-Key": "sk-1", "anthropic-beta": "b1"})
    record = up.requests("A")[0]
    names = [name for name, _ in record.headers]
    assert record.account == "A"
    assert record.method == "POST"
    assert record.path == "/v1/messages"
    assert record.raw_path == "/acct/A/v1/messages?beta=true"
    assert record.query == {"beta": "true"}
    assert names.index("X-Api-Key") < names.index("anthropic-beta")
    assert record.header("x-api-key") == "sk-1"
    assert record.body == json.dumps(ANTHROPIC_BODY).encode()
    assert record.json == ANTHROPIC_BODY
    assert record.status == 200
    assert record.client_disconnected is False


def test_record_counts_per_account(up: FakeUpstream) -> None:
    post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)
    post(up, "/acct/B/v1/messages", ANTHROPIC_BODY)
    post(up, "/v1/messages", ANTHROPIC_BODY)
    assert up.count() == 3
    assert up.count("A") == 1
    assert up.count("") == 1
    assert [r.seq for r in up.requests()] == sorted(r.seq for r in up.requests())


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("zstd", zstd.compress)],
)
def test_record_decodes_body(up: FakeUpstream, encoding: str, compress: Any) -> None:
    raw = compress(json.dumps(ANTHROPIC_BODY).encode())
    status, _, _ = post(up, "/acct/A/v1/messages", raw, {"Content-Encoding": encoding})
    record = up.requests("A")[0]
    assert status == 200
    assert record.body == raw
    assert record.json == ANTHROPIC_BODY


def test_record_chunked_request_body(up: FakeUpstream) -> None:
    payload = json.dumps(ANTHROPIC_BODY).encode()
    with socket.create_connection(("127.0.0.1", up.port), timeout=5) as sock:
        sock.sendall(
            b"POST /acct/A/v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + b"%x\r\n%s\r\n" % (10, payload[:10])
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload) - 10, payload[10:])
        )
        response = b""
        while data := sock.recv(65536):
            response += data
    assert response.startswith(b"HTTP/1.1 200 ")
    assert up.requests("A")[0].json == ANTHROPIC_BODY


def test_event_times_per_frame(up: FakeUpstream) -> None:
    _, _, data = post(up, "/acct/A/v1/messages", {**ANTHROPIC_BODY, "stream": True})
    times = up.event_times(up.requests("A")[0].seq)
    assert len(times) == len(sse_events(data))
    assert times == sorted(times)


# ----- failure scripting -----


def test_enqueue_consumes_in_order(up: FakeUpstream) -> None:
    up.enqueue("A", rate_limited(), server_error(503))
    statuses = [post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)[0] for _ in range(3)]
    other, _, _ = post(up, "/acct/B/v1/messages", ANTHROPIC_BODY)
    assert statuses == [429, 503, 200]
    assert other == 200
    assert [r.status for r in up.requests("A")] == [429, 503, 200]


def test_head_does_not_consume_behavior(up: FakeUpstream) -> None:
    up.enqueue("A", unauthorized())
    request(up, "HEAD", "/acct/A")
    assert up.pending("A") == 1


def test_set_default_persists(up: FakeUpstream) -> None:
    up.set_default("A", server_error(500))
    first = post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)[0]
    second = post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)[0]
    up.set_default("A", None)
    third = post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)[0]
    assert first == 500
    assert second == 500
    assert third == 200


def test_status_returns_exactly(up: FakeUpstream) -> None:
    up.enqueue("A", Status(418, b"teapot", {"X-Custom": "1"}))
    status, headers, body = post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)
    assert status == 418
    assert body == b"teapot"
    assert headers["x-custom"] == "1"


def test_rate_limit_retry_after_seconds(up: FakeUpstream) -> None:
    up.enqueue("A", rate_limited("retry-after-seconds", 7))
    status, headers, _ = post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)
    assert status == 429
    assert headers["retry-after"] == "7"


def test_rate_limit_retry_after_date(up: FakeUpstream) -> None:
    from email.utils import parsedate_to_datetime

    up.enqueue("A", rate_limited("retry-after-date", 120))
    _, headers, _ = post(up, "/acct/A/v1/chat/completions", CHAT_BODY)
    delay = parsedate_to_datetime(headers["retry-after"]).timestamp() - time.time()
    assert 100 < delay <= 121


def test_rate_limit_anthropic_unified(up: FakeUpstream) -> None:
    up.enqueue("A", rate_limited("anthropic-unified", 600))
    _, headers, body = post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)
    reset = int(headers["anthropic-ratelimit-unified-5h-reset"])
    assert headers["anthropic-ratelimit-unified-status"] == "rejected"
    assert headers["anthropic-ratelimit-unified-5h-status"] == "rejected"
    assert 590 < reset - time.time() <= 601
    assert headers["anthropic-ratelimit-unified-reset"] == str(reset)
    assert json.loads(body)["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(("hint", "field"), [("codex-resets-in", "resets_in_seconds"), ("codex-resets-at", "resets_at")])
def test_rate_limit_codex_usage_limit(up: FakeUpstream, hint: str, field: str) -> None:
    up.enqueue("C", rate_limited(hint, 90))
    _, _, body = post(up, "/acct/C/backend-api/codex/responses", RESPONSES_BODY, {"chatgpt-account-id": "acc"})
    error = json.loads(body)["error"]
    expected = 90 if hint == "codex-resets-in" else time.time() + 90
    assert error["type"] == "usage_limit_reached"
    assert abs(error[field] - expected) <= 2


def test_rate_limit_google_retry_info(up: FakeUpstream) -> None:
    up.enqueue("G", rate_limited("google-retry-info", 12))
    status, _, body = post(up, "/acct/G/v1beta/models/m:generateContent", GEMINI_BODY)
    error = json.loads(body)["error"]
    assert status == 429
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
    assert error["details"][0]["retryDelay"] == "12s"


def test_rate_limit_none_has_no_hint(up: FakeUpstream) -> None:
    up.enqueue("A", rate_limited("none"))
    _, headers, _ = post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)
    assert "retry-after" not in headers
    assert not any(name.startswith("anthropic-ratelimit") for name in headers)


def test_rate_limit_rejects_unknown_hint() -> None:
    with pytest.raises(ValueError, match="unknown rate-limit hint"):
        rate_limited("soon")


ERROR_CASES = [
    (rate_limited("none"), 429, "rate_limit_error", "requests", "RESOURCE_EXHAUSTED"),
    (server_error(503), 503, "overloaded_error", "server_error", "UNAVAILABLE"),
    (server_error(500), 500, "api_error", "server_error", "INTERNAL"),
    (unauthorized(), 401, "authentication_error", "invalid_request_error", "UNAUTHENTICATED"),
    (forbidden(), 403, "permission_error", "permission_error", "PERMISSION_DENIED"),
    (model_not_found(), 404, "not_found_error", "invalid_request_error", "NOT_FOUND"),
    (invalid_request(), 400, "invalid_request_error", "invalid_request_error", "INVALID_ARGUMENT"),
    (payment_required(), 402, "billing_error", "insufficient_quota", "FAILED_PRECONDITION"),
]


@pytest.mark.parametrize(("behavior", "code", "anthropic_type", "openai_type", "gemini_status"), ERROR_CASES)
@pytest.mark.parametrize("route", list(ROUTES))
def test_error_dialects(
    up: FakeUpstream, route: str, behavior: Any, code: int, anthropic_type: str, openai_type: str, gemini_status: str
) -> None:
    path, body, headers = ROUTES[route]
    up.enqueue("E", behavior)
    status, _, data = post(up, "/acct/E" + path, body, headers)
    error = json.loads(data)["error"]
    assert status == code
    if route == "anthropic":
        assert json.loads(data)["type"] == "error"
        assert error["type"] == anthropic_type
    elif route in ("gemini", "code_assist"):
        assert error["code"] == code
        assert error["status"] == gemini_status
    else:
        assert error["type"] == openai_type
        assert set(error) >= {"message", "type", "code", "param"}


def test_model_not_found_names_model(up: FakeUpstream) -> None:
    up.enqueue("A", model_not_found())
    _, _, body = post(up, "/acct/A/v1/chat/completions", CHAT_BODY)
    assert "gpt-test" in json.loads(body)["error"]["message"]


def test_slow_spaces_events(up: FakeUpstream) -> None:
    up.enqueue("A", Slow(0.03, events=4))
    _, _, data = post(up, "/acct/A/v1/messages", {**ANTHROPIC_BODY, "stream": True})
    times = up.event_times(up.requests("A")[0].seq)
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert len([e for e in sse_events(data) if e[0] == "content_block_delta"]) == 4
    assert min(gaps) >= 0.025


def test_delay_before_headers(up: FakeUpstream) -> None:
    up.enqueue("A", Delay(0.2))
    started = time.monotonic()
    status, _, _ = post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)
    assert status == 200
    assert time.monotonic() - started >= 0.2


def test_drop_after_cuts_stream(up: FakeUpstream) -> None:
    up.enqueue("A", DropAfter(events=2))
    _, chunks, terminated = raw_exchange(up, "/acct/A/v1/messages", {**ANTHROPIC_BODY, "stream": True})
    assert terminated is False
    assert [name for name, _ in sse_events(b"".join(chunks))] == ["message_start", "content_block_start"]


def test_drop_after_is_incomplete_read(up: FakeUpstream) -> None:
    up.enqueue("A", DropAfter(events=1))
    with pytest.raises(http.client.IncompleteRead):
        post(up, "/acct/A/v1/chat/completions", {**CHAT_BODY, "stream": True})


def test_gzip_json_response(up: FakeUpstream) -> None:
    up.enqueue("A", Gzip())
    _, headers, body = post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)
    assert headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(body))["content"][0]["text"] == "Hello from A."


def test_gzip_error_response(up: FakeUpstream) -> None:
    up.enqueue("A", rate_limited() + Gzip())
    status, headers, body = post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)
    assert status == 429
    assert headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(body))["error"]["type"] == "rate_limit_error"


def test_gzip_stream_decodes_per_frame(up: FakeUpstream) -> None:
    up.enqueue("A", Gzip())
    _, chunks, _ = raw_exchange(up, "/acct/A/v1/responses", {**RESPONSES_BODY, "stream": True})
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    first = decompressor.decompress(chunks[0])
    rest = b"".join(decompressor.decompress(chunk) for chunk in chunks[1:])
    assert first.startswith(b"event: response.created\n")
    assert sse_events(first + rest)[-1][0] == "response.completed"


def test_crlf_frames(up: FakeUpstream) -> None:
    up.enqueue("A", CRLF())
    _, _, data = post(up, "/acct/A/v1/messages", {**ANTHROPIC_BODY, "stream": True})
    assert data.startswith(b"event: message_start\r\ndata: ")
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_split_utf8_writes(up: FakeUpstream) -> None:
    up.enqueue("A", SplitUtf8())
    _, chunks, terminated = raw_exchange(up, "/acct/A/v1/messages", {**ANTHROPIC_BODY, "stream": True})
    joined = b"".join(chunks)
    text = "".join(json.loads(d)["delta"]["text"] for n, d in sse_events(joined) if n == "content_block_delta")
    broken = []
    for chunk in chunks:
        try:
            chunk.decode()
        except UnicodeDecodeError:
            broken.append(chunk)
    assert terminated is True
    assert text == f"Hello from A. {UTF8_SAMPLE}"
    assert broken
    assert ("comment", "keep-alive") in sse_events(joined)


def test_split_utf8_responses_keepalive(up: FakeUpstream) -> None:
    up.enqueue("A", SplitUtf8())
    _, _, data = post(up, "/acct/A/v1/responses", {**RESPONSES_BODY, "stream": True})
    assert b"\n: keep-alive\n\n" in data


def test_no_usage_stream(up: FakeUpstream) -> None:
    up.enqueue("A", NoUsage())
    _, _, data = post(up, "/acct/A/v1/messages", {**ANTHROPIC_BODY, "stream": True})
    assert b"usage" not in data


@pytest.mark.parametrize("route", ["anthropic", "chat", "responses", "gemini", "code_assist"])
def test_no_usage_json(up: FakeUpstream, route: str) -> None:
    path, body, headers = ROUTES[route]
    up.enqueue("A", NoUsage())
    _, _, data = post(up, "/acct/A" + path, body, headers)
    assert b'"usage"' not in data
    assert b'"usageMetadata"' not in data


def test_stream_error_anthropic(up: FakeUpstream) -> None:
    up.enqueue("A", StreamError(after=3))
    _, _, data = post(up, "/acct/A/v1/messages", {**ANTHROPIC_BODY, "stream": True})
    events = sse_events(data)
    assert [name for name, _ in events] == ["message_start", "content_block_start", "ping", "error"]
    assert json.loads(events[-1][1])["error"]["type"] == "overloaded_error"


def test_stream_error_chat_has_no_done(up: FakeUpstream) -> None:
    up.enqueue("A", StreamError(after=2, error=rate_limited()))
    _, _, data = post(up, "/acct/A/v1/chat/completions", {**CHAT_BODY, "stream": True})
    events = sse_events(data)
    assert json.loads(events[-1][1])["error"]["code"] == "rate_limit_exceeded"
    assert (None, "[DONE]") not in events


def test_stream_error_responses_failed(up: FakeUpstream) -> None:
    up.enqueue("A", StreamError(after=2))
    _, _, data = post(up, "/acct/A/v1/responses", {**RESPONSES_BODY, "stream": True})
    assert sse_events(data)[-1][0] == "response.failed"


def test_omit_drops_named_events(up: FakeUpstream) -> None:
    up.enqueue("A", Omit("message_stop", "ping"))
    _, _, data = post(up, "/acct/A/v1/messages", {**ANTHROPIC_BODY, "stream": True})
    names = [name for name, _ in sse_events(data)]
    assert "message_stop" not in names
    assert "ping" not in names


def test_combined_slow_and_gzip(up: FakeUpstream) -> None:
    up.enqueue("A", [Slow(0.01, events=2), Gzip()])
    _, headers, body = post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)
    assert headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(body))["content"][0]["text"] == "Hello from A."


def test_client_disconnect_recorded(up: FakeUpstream) -> None:
    up.enqueue("A", Slow(0.05, events=40))
    payload = json.dumps({**ANTHROPIC_BODY, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", up.port), timeout=5) as sock:
        sock.sendall(b"POST /acct/A/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
        sock.recv(65536)
    deadline = time.monotonic() + 2
    record = up.requests("A")[0]
    while not record.client_disconnected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert record.client_disconnected is True
    assert len(up.event_times(record.seq)) < 40


# ----- control API and process mode -----


def test_control_api_scripts_account(up: FakeUpstream) -> None:
    spec = {"account": "A", "behaviors": [{"kind": "rate_limited", "hint": "retry-after-seconds", "seconds": 3}]}
    control_status, _, _ = post(up, "/_fake/enqueue", spec)
    status, headers, _ = post(up, "/acct/A/v1/messages", ANTHROPIC_BODY)
    _, _, count = request(up, "GET", "/_fake/count?account=A")
    assert control_status == 200
    assert status == 429
    assert headers["retry-after"] == "3"
    assert json.loads(count) == {"count": 1}


def test_control_api_rejects_bad_spec(up: FakeUpstream) -> None:
    status, _, body = post(up, "/_fake/enqueue", {"account": "A", "behaviors": [{"kind": "nope"}]})
    assert status == 400
    assert "unknown behavior kind" in json.loads(body)["error"]["message"]


def test_process_mode_prints_port() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        port = int(line.removeprefix("listening on ").strip())
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("POST", "/acct/P/v1/messages", body=json.dumps(ANTHROPIC_BODY))
        reply = json.loads(connection.getresponse().read())
        connection.close()
    finally:
        process.terminate()
        process.wait(5)
    assert line.startswith("listening on ")
    assert reply["content"][0]["text"] == "Hello from P."
    assert process.returncode == 0


# ----- real SDKs against the fake -----


def test_anthropic_sdk(up: FakeUpstream) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=up.account_url("A"), api_key="sk-test", max_retries=0)
    message = client.messages.create(**ANTHROPIC_BODY)
    with client.messages.stream(**ANTHROPIC_BODY) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert message.content[0].text == "Hello from A."
    assert message.usage.cache_read_input_tokens == USAGE.cache_read
    assert streamed == "Hello from A."
    assert final.usage.output_tokens == USAGE.output
    assert final.stop_reason == "end_turn"


def test_openai_sdk_chat(up: FakeUpstream) -> None:
    import openai

    client = openai.OpenAI(base_url=up.account_url("B") + "/v1", api_key="sk-test", max_retries=0)
    completion = client.chat.completions.create(**CHAT_BODY)
    chunks = list(client.chat.completions.create(**CHAT_BODY, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert completion.choices[0].message.content == "Hello from B."
    assert completion.usage.completion_tokens_details.reasoning_tokens == USAGE.reasoning
    assert streamed == "Hello from B."
    assert chunks[-1].usage.prompt_tokens == USAGE.input


def test_openai_sdk_responses(up: FakeUpstream) -> None:
    import openai

    client = openai.OpenAI(base_url=up.account_url("C") + "/v1", api_key="sk-test", max_retries=0)
    response = client.responses.create(**RESPONSES_BODY)
    with client.responses.stream(**RESPONSES_BODY) as stream:
        final = stream.get_final_response()
    assert response.output_text == "Hello from C."
    assert final.output_text == "Hello from C."
    assert final.usage.input_tokens_details.cached_tokens == USAGE.cache_read


def test_google_genai_sdk(up: FakeUpstream) -> None:
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="sk-test", http_options=types.HttpOptions(base_url=up.account_url("G")))
    generated = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
    streamed = "".join(chunk.text or "" for chunk in chunks)
    assert generated.text == "Hello from G."
    assert generated.usage_metadata.thoughts_token_count == USAGE.reasoning
    assert streamed == "Hello from G."
    assert chunks[-1].usage_metadata.total_token_count == GEMINI_USAGE["totalTokenCount"]
    assert up.requests("G")[0].path == "/v1/models/gemini-2.5-flash:generateContent"
