"""Code Assist wrapping: request envelopes, response unwrapping and the incremental SSE rewriter."""

from __future__ import annotations

import json

import pytest

from providers.geminicli import (
    SSEUnwrapper,
    code_assist_route,
    unwrap_response,
    wrap_count_tokens,
    wrap_request,
)

REQUEST = {
    "contents": [{"role": "user", "parts": [{"text": "Grüße, 世界 🌍"}]}],
    "generationConfig": {"temperature": 0.2},
}
USAGE = {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 10}


def _chunk(text: str, usage: dict | None = None) -> dict:
    inner: dict = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}}]}
    if usage:
        inner["usageMetadata"] = usage
    return inner


def _wrapped(inner: dict) -> bytes:
    return json.dumps({"response": inner, "traceId": "t-1"}, ensure_ascii=False).encode()


def _compact(value: dict) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def test_wrap_request():
    wrapped = json.loads(wrap_request(REQUEST, "gemini-2.5-pro", "proj-1"))
    assert wrapped == {"model": "gemini-2.5-pro", "project": "proj-1", "request": REQUEST}


def test_wrap_request_strips_models_prefix():
    assert json.loads(wrap_request({}, "models/gemini-2.5-pro", "p"))["model"] == "gemini-2.5-pro"


def test_wrap_request_keeps_utf8():
    assert "世界 🌍".encode() in wrap_request(REQUEST, "m", "p")


def test_wrap_count_tokens():
    wrapped = json.loads(wrap_count_tokens(REQUEST, "gemini-2.5-flash"))
    assert wrapped == {"request": {"model": "models/gemini-2.5-flash", "contents": REQUEST["contents"]}}


def test_wrap_count_tokens_nested_request():
    body = {"generateContentRequest": {"model": "models/x", "contents": REQUEST["contents"]}}
    wrapped = json.loads(wrap_count_tokens(body, "x"))
    assert wrapped["request"]["contents"] == REQUEST["contents"]


def test_unwrap_response_keeps_usage():
    inner = _chunk("hello", USAGE)
    assert json.loads(unwrap_response(_wrapped(inner))) == inner


def test_unwrap_response_top_level_usage():
    body = json.dumps({"response": _chunk("hi"), "usageMetadata": USAGE}).encode()
    assert json.loads(unwrap_response(body))["usageMetadata"] == USAGE


def test_unwrap_response_array():
    body = json.dumps([{"response": _chunk("a")}, {"response": _chunk("b", USAGE)}]).encode()
    assert json.loads(unwrap_response(body)) == [_chunk("a"), _chunk("b", USAGE)]


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}',
        b'{"totalTokens": 12}',
        b"not json",
        b"[1, 2]",
    ],
)
def test_unwrap_response_passthrough(body):
    assert unwrap_response(body) == body


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1beta/models/gemini-2.5-pro:generateContent", "/v1internal:generateContent"),
        (
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            "/v1internal:streamGenerateContent?alt=sse",
        ),
        ("/v1beta/models/gemini-2.5-pro:streamGenerateContent", "/v1internal:streamGenerateContent?alt=sse"),
        ("/v1beta/models/gemini-2.5-flash:countTokens?key=abc", "/v1internal:countTokens"),
    ],
)
def test_code_assist_route(path, expected):
    route = code_assist_route(path)
    assert route is not None
    assert route.path == expected
    assert route.model in ("gemini-2.5-pro", "gemini-2.5-flash")
    assert route.stream is expected.endswith("alt=sse")


@pytest.mark.parametrize(
    "path",
    ["/v1beta/models/gemini-2.5-pro:embedContent", "/v1beta/models", "/v1/chat/completions", "/v1beta/models/x"],
)
def test_code_assist_route_unsupported(path):
    assert code_assist_route(path) is None


def _stream() -> tuple[bytes, bytes]:
    """Return a Code Assist SSE stream and the Gemini stream it must become."""
    first, second, last = _chunk("Grüße "), _chunk("世界 🌍"), _chunk("!", USAGE)
    upstream = (
        b"data: " + _wrapped(first) + b"\r\n\r\n"
        + b": keep-alive\r\n\r\n"
        + b"event: message\ndata: " + _wrapped(second) + b"\n\n"
        + b"data:" + _wrapped(last) + b"\r\n\r\n"
        + b"data: [DONE]\n\n"
    )
    expected = (
        b"data: " + _compact(first) + b"\r\n\r\n"
        + b": keep-alive\r\n\r\n"
        + b"event: message\ndata: " + _compact(second) + b"\n\n"
        + b"data: " + _compact(last) + b"\r\n\r\n"
        + b"data: [DONE]\n\n"
    )
    return upstream, expected


def _run(chunks: list[bytes]) -> bytes:
    unwrapper = SSEUnwrapper()
    output = b"".join(unwrapper.feed(chunk) for chunk in chunks)
    return output + unwrapper.finish()


def test_sse_whole_stream():
    upstream, expected = _stream()
    assert _run([upstream]) == expected


def test_sse_split_at_every_byte():
    upstream, expected = _stream()
    for position in range(len(upstream) + 1):
        output = _run([upstream[:position], upstream[position:]])
        assert output == expected, f"split at byte {position}"


def test_sse_split_at_every_pair_of_bytes():
    upstream, expected = _stream()
    step = 7  # every pair would be ~100k runs; a prime stride still hits all alignments
    for first in range(0, len(upstream) + 1, step):
        for second in range(first, len(upstream) + 1, 3):
            output = _run([upstream[:first], upstream[first:second], upstream[second:]])
            assert output == expected, f"split at bytes {first} and {second}"


def test_sse_one_byte_at_a_time():
    upstream, expected = _stream()
    assert _run([upstream[i : i + 1] for i in range(len(upstream))]) == expected


def test_sse_emits_each_event_when_complete():
    unwrapper = SSEUnwrapper()
    event = b"data: " + _wrapped(_chunk("a")) + b"\n\n"

    assert unwrapper.feed(event[:-1]) == b""
    assert unwrapper.feed(event[-1:]) == b"data: " + _compact(_chunk("a")) + b"\n\n"


def test_sse_cr_only_line_endings():
    upstream = b"data: " + _wrapped(_chunk("x")) + b"\r\r"
    expected = b"data: " + _compact(_chunk("x")) + b"\r\r"
    for position in range(len(upstream) + 1):
        assert _run([upstream[:position], upstream[position:]]) == expected


def test_sse_multiline_data_event():
    wrapped = json.dumps({"response": _chunk("multi")}, indent=1).encode()
    lines = wrapped.split(b"\n")
    upstream = b"id: 4\n" + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"

    assert _run([upstream]) == b"id: 4\ndata: " + _compact(_chunk("multi")) + b"\n\n"


def test_sse_unterminated_last_event_is_flushed():
    upstream = b"data: " + _wrapped(_chunk("end"))
    unwrapper = SSEUnwrapper()

    assert unwrapper.feed(upstream) == b""
    assert unwrapper.finish() == b"data: " + _compact(_chunk("end"))


def test_sse_non_wrapped_data_passes_through():
    upstream = b'data: {"error": {"code": 500}}\n\ndata: not json\n\n'
    assert _run([upstream]) == upstream
