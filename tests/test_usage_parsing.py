"""Token usage from JSON responses and SSE streams of the four upstream formats."""

import json

import pytest

import providers.usage as usage_module
from providers.usage import SSEUsageObserver, Usage, UsageFormat, parse_json_usage


def sse(*events: tuple[str | None, object]) -> bytes:
    """Build an SSE stream with LF line ends from (event name, data) pairs."""
    parts = []
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        prefix = f"event: {name}\n" if name else ""
        parts.append(f"{prefix}data: {text}\n\n")
    return "".join(parts).encode()


# Text with multi-byte characters and quoted words that look like usage keys, so splits
# land inside characters and the byte checks meet decoys.
TRICKY_TEXT = 'Héllo wörld ✓ 🚀 "usage": {"input_tokens": 999}, "usageMetadata": {}'

ANTHROPIC_STREAM = sse(
    ("message_start", {
        "type": "message_start",
        "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "model": "claude-sonnet-4-5", "stop_reason": None,
            "usage": {"input_tokens": 25, "cache_creation_input_tokens": 100,
                      "cache_read_input_tokens": 2000, "output_tokens": 1},
        },
    }),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": TRICKY_TEXT}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": None},
                       "usage": {"output_tokens": 15}}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                       "usage": {"output_tokens": 42}}),
    ("message_stop", {"type": "message_stop"}),
)
ANTHROPIC_USAGE = Usage(input=25, output=42, cache_read=2000, cache_write=100)

OPENAI_CHAT_STREAM = sse(
    (None, {"id": "c1", "object": "chat.completion.chunk", "usage": None,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": TRICKY_TEXT}}]}),
    (None, {"id": "c1", "object": "chat.completion.chunk", "usage": None,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    (None, {"id": "c1", "object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                      "prompt_tokens_details": {"cached_tokens": 100},
                      "completion_tokens_details": {"reasoning_tokens": 12}}}),
    (None, "[DONE]"),
)
OPENAI_CHAT_USAGE = Usage(input=20, output=30, cache_read=100, reasoning=12)

RESPONSES_STREAM = sse(
    ("response.created", {"type": "response.created",
                          "response": {"id": "resp_1", "status": "in_progress", "usage": None}}),
    ("response.output_text.delta", {"type": "response.output_text.delta", "delta": TRICKY_TEXT}),
    ("response.completed", {
        "type": "response.completed",
        "response": {
            "id": "resp_1", "status": "completed",
            "output": [{"type": "message", "content": [{"type": "output_text",
                                                         "text": TRICKY_TEXT}]}],
            "usage": {"input_tokens": 300, "input_tokens_details": {"cached_tokens": 200},
                      "output_tokens": 50, "output_tokens_details": {"reasoning_tokens": 40},
                      "total_tokens": 350},
        },
    }),
)
RESPONSES_USAGE = Usage(input=100, output=50, cache_read=200, reasoning=40)

GEMINI_CHUNKS = [
    {"candidates": [{"content": {"parts": [{"text": TRICKY_TEXT}], "role": "model"}}],
     "usageMetadata": {"promptTokenCount": 50, "totalTokenCount": 50},
     "modelVersion": "gemini-2.5-pro"},
    {"candidates": [{"content": {"parts": [{"functionCall": {
        "name": "report", "args": {"usageMetadata": {"promptTokenCount": 7}}}}],
        "role": "model"}, "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 10,
                       "cachedContentTokenCount": 20, "thoughtsTokenCount": 30,
                       "totalTokenCount": 90},
     "modelVersion": "gemini-2.5-pro"},
]
GEMINI_STREAM = sse(*[(None, chunk) for chunk in GEMINI_CHUNKS])
CODE_ASSIST_STREAM = sse(*[(None, {"response": chunk, "traceId": "t1"}) for chunk in GEMINI_CHUNKS])
GEMINI_USAGE = Usage(input=30, output=40, cache_read=20, reasoning=30)

STREAMS = {
    "anthropic": (UsageFormat.ANTHROPIC, ANTHROPIC_STREAM, ANTHROPIC_USAGE),
    "openai_chat": (UsageFormat.OPENAI_CHAT, OPENAI_CHAT_STREAM, OPENAI_CHAT_USAGE),
    "openai_responses": (UsageFormat.OPENAI_RESPONSES, RESPONSES_STREAM, RESPONSES_USAGE),
    "gemini": (UsageFormat.GEMINI, GEMINI_STREAM, GEMINI_USAGE),
    "code_assist": (UsageFormat.GEMINI, CODE_ASSIST_STREAM, GEMINI_USAGE),
}


def observe(fmt: UsageFormat, *chunks: bytes, **options) -> SSEUsageObserver:
    observer = SSEUsageObserver(fmt, **options)
    for chunk in chunks:
        observer.feed(chunk)
    return observer


# Usage arithmetic


def test_usage_total_adds_prompt_and_output():
    usage = Usage(input=1, output=2, cache_read=3, cache_write=4, reasoning=1)
    assert usage.prompt == 8
    assert usage.total == 10


# JSON responses


def test_json_anthropic_message():
    body = json.dumps({"type": "message", "content": [], "usage": {
        "input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 7,
        "cache_creation_input_tokens": 3}}).encode()
    assert parse_json_usage("anthropic", body) == Usage(
        input=10, output=5, cache_read=7, cache_write=3)


def test_json_openai_chat_completion():
    body = json.dumps({"object": "chat.completion", "choices": [], "usage": {
        "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 8}}}).encode()
    usage = parse_json_usage(UsageFormat.OPENAI_CHAT, body)
    assert usage == Usage(input=36, output=20, cache_read=64, reasoning=8)
    assert usage.total == 120


def test_json_openai_responses():
    body = json.dumps({"object": "response", "output": [], "usage": {
        "input_tokens": 300, "input_tokens_details": {"cached_tokens": 200},
        "output_tokens": 50, "output_tokens_details": {"reasoning_tokens": 40},
        "total_tokens": 350}}).encode()
    assert parse_json_usage("openai_responses", body) == RESPONSES_USAGE


def test_json_gemini():
    body = json.dumps(GEMINI_CHUNKS[1]).encode()
    usage = parse_json_usage("gemini", body)
    assert usage == GEMINI_USAGE
    assert usage.total == 90


def test_json_gemini_code_assist_wrapper():
    body = json.dumps({"response": GEMINI_CHUNKS[1], "traceId": "t"}).encode()
    assert parse_json_usage("gemini", body) == GEMINI_USAGE


def test_json_gemini_array_takes_last_usage():
    body = json.dumps(GEMINI_CHUNKS).encode()
    assert parse_json_usage("gemini", body) == GEMINI_USAGE


@pytest.mark.parametrize("fmt", list(UsageFormat))
def test_json_without_usage_is_unknown(fmt):
    assert parse_json_usage(fmt, b'{"id": "x", "choices": []}') is None


@pytest.mark.parametrize("fmt", list(UsageFormat))
def test_json_invalid_body_is_unknown(fmt):
    assert parse_json_usage(fmt, b"<html>bad gateway</html>") is None


def test_json_null_usage_is_unknown():
    assert parse_json_usage("openai_chat", b'{"usage": null}') is None


def test_json_unknown_format_raises():
    with pytest.raises(ValueError):
        parse_json_usage("cohere", b"{}")


# Streams


@pytest.mark.parametrize("name", list(STREAMS))
def test_stream_whole(name):
    fmt, stream, expected = STREAMS[name]
    observer = observe(fmt, stream)
    assert observer.usage == expected
    assert observer.saw_terminal_event


@pytest.mark.parametrize("name", list(STREAMS))
def test_stream_split_at_every_byte(name):
    fmt, stream, expected = STREAMS[name]
    for cut in range(len(stream) + 1):
        observer = observe(fmt, stream[:cut], stream[cut:])
        assert observer.usage == expected, f"split at byte {cut}"
        assert observer.saw_terminal_event, f"split at byte {cut}"


@pytest.mark.parametrize("name", list(STREAMS))
def test_stream_one_byte_chunks(name):
    fmt, stream, expected = STREAMS[name]
    observer = observe(fmt, *(stream[index : index + 1] for index in range(len(stream))))
    assert observer.usage == expected


@pytest.mark.parametrize("name", list(STREAMS))
def test_stream_crlf_split_at_every_byte(name):
    fmt, stream, expected = STREAMS[name]
    crlf = stream.replace(b"\n", b"\r\n")
    for cut in range(len(crlf) + 1):
        observer = observe(fmt, crlf[:cut], crlf[cut:])
        assert observer.usage == expected, f"split at byte {cut}"
        assert observer.saw_terminal_event, f"split at byte {cut}"


@pytest.mark.parametrize("name", list(STREAMS))
def test_stream_cr_line_ends(name):
    fmt, stream, expected = STREAMS[name]
    observer = observe(fmt, stream.replace(b"\n", b"\r"))
    assert observer.usage == expected


def test_multiline_data_joined():
    usage_json = json.dumps({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}})
    head, tail = usage_json.split('"usage"')
    stream = f'data: {head}\r\ndata: "usage"{tail}\r\n\r\ndata: [DONE]\r\n\r\n'.encode()
    for cut in range(len(stream) + 1):
        observer = observe("openai_chat", stream[:cut], stream[cut:])
        assert observer.usage == Usage(input=4, output=2), f"split at byte {cut}"


def test_anthropic_takes_last_value_not_sum():
    observer = observe(UsageFormat.ANTHROPIC, ANTHROPIC_STREAM)
    # message_start reports 1, the deltas report running totals 15 and 42.
    assert observer.usage.output == 42


def test_anthropic_delta_updates_input_fields():
    stream = sse(
        ("message_start", {"type": "message_start", "message": {
            "usage": {"input_tokens": 0, "output_tokens": 1}}}),
        ("message_delta", {"type": "message_delta", "usage": {
            "input_tokens": 900, "cache_read_input_tokens": 50, "output_tokens": 70}}),
    )
    assert observe("anthropic", stream).usage == Usage(input=900, output=70, cache_read=50)


def test_anthropic_without_event_lines():
    stream = b"".join(
        line + b"\n" for line in ANTHROPIC_STREAM.split(b"\n") if not line.startswith(b"event:")
    )
    observer = observe("anthropic", stream)
    assert observer.usage == ANTHROPIC_USAGE
    assert observer.saw_terminal_event


def test_responses_without_event_lines():
    stream = b"".join(
        line + b"\n" for line in RESPONSES_STREAM.split(b"\n") if not line.startswith(b"event:")
    )
    observer = observe("openai_responses", stream)
    assert observer.usage == RESPONSES_USAGE
    assert observer.saw_terminal_event


def test_responses_incomplete_carries_usage():
    stream = sse(("response.incomplete", {"type": "response.incomplete", "response": {
        "status": "incomplete", "usage": {"input_tokens": 5, "output_tokens": 9}}}))
    observer = observe("openai_responses", stream)
    assert observer.usage == Usage(input=5, output=9)
    assert observer.saw_terminal_event


def test_openai_chat_keepalive_comments_ignored():
    stream = b": keep-alive\n\n" + OPENAI_CHAT_STREAM + b": bye\n\n"
    assert observe("openai_chat", stream).usage == OPENAI_CHAT_USAGE


def test_gemini_nested_usage_key_ignored():
    # The function call arguments above contain a `usageMetadata` key with 7 prompt tokens.
    assert observe("gemini", GEMINI_STREAM).usage.input == 30


# Streams cut short


def cut_before(stream: bytes, marker: bytes) -> bytes:
    return stream[: stream.index(marker)]


def test_openai_chat_cut_before_usage_is_unknown():
    stream = cut_before(OPENAI_CHAT_STREAM, b'"prompt_tokens"')
    observer = observe("openai_chat", stream)
    assert observer.usage is None
    assert not observer.saw_terminal_event


def test_responses_cut_before_completed_is_unknown():
    stream = cut_before(RESPONSES_STREAM, b"event: response.completed")
    observer = observe("openai_responses", stream)
    assert observer.usage is None
    assert not observer.saw_terminal_event


def test_gemini_cut_in_first_chunk_is_unknown():
    stream = cut_before(GEMINI_STREAM, b'"modelVersion"')
    observer = observe("gemini", stream)
    assert observer.usage is None
    assert not observer.saw_terminal_event


def test_anthropic_cut_in_message_start_is_unknown():
    stream = cut_before(ANTHROPIC_STREAM, b'"cache_read_input_tokens"')
    assert observe("anthropic", stream).usage is None


def test_anthropic_cut_after_message_start_keeps_input():
    stream = cut_before(ANTHROPIC_STREAM, b"event: content_block_delta")
    observer = observe("anthropic", stream)
    assert observer.usage == Usage(input=25, output=1, cache_read=2000, cache_write=100)
    assert not observer.saw_terminal_event


def test_empty_stream_is_unknown():
    assert observe("anthropic").usage is None


# Memory and cost


def test_feed_copies_chunks():
    chunk = bytearray(OPENAI_CHAT_STREAM[:-40])
    observer = observe("openai_chat", chunk)
    original = bytes(chunk)
    chunk[:] = b"x" * len(chunk)
    observer.feed(OPENAI_CHAT_STREAM[-40:])
    assert observer.usage == OPENAI_CHAT_USAGE
    assert original == OPENAI_CHAT_STREAM[:-40]


def test_feed_leaves_chunk_unchanged():
    chunk = bytearray(ANTHROPIC_STREAM)
    observe("anthropic", chunk)
    assert bytes(chunk) == ANTHROPIC_STREAM


def test_buffer_keeps_only_incomplete_event():
    observer = observe("openai_chat", OPENAI_CHAT_STREAM + b"data: {\"partial\"")
    assert observer.pending_bytes == len(b"data: {\"partial\"")


def test_oversized_event_skipped():
    huge = sse((None, {"choices": [{"delta": {"content": "x" * 5000}}]}))
    observer = SSEUsageObserver("openai_chat", max_event_bytes=1024)
    for index in range(0, len(huge), 100):
        observer.feed(huge[index : index + 100])
        assert observer.pending_bytes <= 1024 + 100
    observer.feed(OPENAI_CHAT_STREAM)
    assert observer.events_skipped == 1
    assert observer.usage == OPENAI_CHAT_USAGE


@pytest.mark.parametrize("name", ["anthropic", "openai_chat", "openai_responses"])
def test_content_events_not_decoded(name, monkeypatch):
    fmt, stream, expected = STREAMS[name]
    calls = []
    real_loads = json.loads

    def counting_loads(data, *args, **kwargs):
        calls.append(len(data))
        return real_loads(data, *args, **kwargs)

    monkeypatch.setattr(usage_module.json, "loads", counting_loads)
    events = stream.split(b"\n\n")
    content = [event for event in events if TRICKY_TEXT[:5].encode() in event][0] + b"\n\n"
    observer = observe(fmt, content * 1000, stream)

    assert observer.usage == expected
    assert len(calls) <= 3
