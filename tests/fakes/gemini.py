"""Gemini API wire format: models/{model}:generateContent, :streamGenerateContent, :countTokens, models.

The routes work under any prefix, e.g. /v1beta/models/... (Gemini CLI) and /v1/models/...
(the google-genai Python SDK). A stream with `?alt=sse` is `data: {chunk}\\r\\n\\r\\n` frames;
without `alt=sse` it is one JSON array written element by element. Each chunk is a
GenerateContentResponse with one text part. Only the last chunk has finishReason "STOP" and
usageMetadata (see `tests.fakes.usage`).

A request whose generationConfig has responseJsonSchema or responseSchema gets a JSON
object built from the schema as its text, which Gemini CLI's model-router call needs.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from tests.fakes.content import response_text, split_text, value_from_schema
from tests.fakes.core import ID_PLACEHOLDER, Call, JsonReply, Reply, StreamReply, dumps, json_reply, sse_frame
from tests.fakes.errors import reject
from tests.fakes.usage import COUNT_TOKENS, gemini_usage

MODELS = ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-3.5-flash-lite", "gemini-3.8-flash", "gemini-3.1-pro-preview")
"""Model ids that the Gemini-shaped GET .../models lists."""

_RESPONSE_ID = ID_PLACEHOLDER.decode()
SSE_EOL = b"\r\n"


def response_text_for(call: Call, request: dict[str, Any]) -> str:
    """Return the response text for a plain Gemini request body."""
    config = request.get("generationConfig")
    if isinstance(config, dict):
        schema = config.get("responseJsonSchema", config.get("responseSchema"))
        if schema is not None:
            return json.dumps(value_from_schema(schema), ensure_ascii=False)
    return response_text(call.account, call.plan.split_utf8)


def response_dict(text: str, model: str, with_usage: bool) -> dict[str, Any]:
    """Return a complete GenerateContentResponse."""
    return _chunk(text, model, final=True, with_usage=with_usage)


def _chunk(text: str, model: str, final: bool, with_usage: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if final:
        candidate["finishReason"] = "STOP"
    chunk: dict[str, Any] = {"candidates": [candidate]}
    if final and with_usage:
        chunk["usageMetadata"] = gemini_usage()
    chunk["modelVersion"] = model
    chunk["responseId"] = _RESPONSE_ID
    return chunk


def stream_chunks(text: str, model: str, events: int, with_usage: bool) -> list[dict[str, Any]]:
    """Return the stream's GenerateContentResponse chunks; the last one carries the finish reason."""
    pieces = split_text(text, events)
    last = len(pieces) - 1
    return [_chunk(piece, model, index == last, with_usage) for index, piece in enumerate(pieces)]


def chunk_names(count: int) -> list[str]:
    return ["chunk"] * (count - 1) + ["final"]


def _validate(call: Call, body: Any) -> JsonReply | None:
    if not isinstance(body, dict):
        return reject(call.dialect, "Invalid JSON payload received. The body is not a JSON object.", call.model)
    if not isinstance(body.get("contents"), list):
        return reject(call.dialect, "* GenerateContentRequest.contents: contents is not specified", call.model)
    return None


def handle_generate(call: Call) -> Reply:
    error = _validate(call, call.body)
    if error is not None:
        return error
    model = call.model or ""
    text = response_text_for(call, call.body)
    return JsonReply(200, _response_body(text, model, not call.plan.no_usage))


@lru_cache(maxsize=1024)
def _response_body(text: str, model: str, with_usage: bool) -> bytes:
    return dumps(response_dict(text, model, with_usage))


def handle_stream(call: Call) -> Reply:
    error = _validate(call, call.body)
    if error is not None:
        return error
    model = call.model or ""
    text = response_text_for(call, call.body)
    plan = call.plan
    if call.record.query.get("alt") == "sse":
        frames = _sse_frames(text, model, plan.events, not plan.no_usage)
        return StreamReply(frames, "gemini", SSE_EOL)
    frames = _array_frames(text, model, plan.events, not plan.no_usage)
    # NOTE: a StreamError in this JSON-array mode still writes an SSE-framed error event.
    return StreamReply(frames, "gemini", SSE_EOL, content_type="application/json")


@lru_cache(maxsize=1024)
def _sse_frames(text: str, model: str, events: int, with_usage: bool) -> tuple[tuple[str, bytes], ...]:
    chunks = stream_chunks(text, model, events, with_usage)
    names = chunk_names(len(chunks))
    return tuple((name, sse_frame(None, dumps(chunk), SSE_EOL)) for name, chunk in zip(names, chunks))


@lru_cache(maxsize=256)
def _array_frames(text: str, model: str, events: int, with_usage: bool) -> tuple[tuple[str, bytes], ...]:
    chunks = stream_chunks(text, model, events, with_usage)
    names = chunk_names(len(chunks))
    frames = []
    for index, (name, chunk) in enumerate(zip(names, chunks)):
        opener = b"[" if index == 0 else b",\r\n"
        closer = b"]" if name == "final" else b""
        frames.append((name, opener + dumps(chunk) + closer))
    return tuple(frames)


def handle_count_tokens(call: Call) -> Reply:
    if not isinstance(call.body, dict):
        return reject(call.dialect, "Invalid JSON payload received. The body is not a JSON object.", call.model)
    return json_reply(200, {"totalTokens": COUNT_TOKENS})


def _model_entry(model_id: str) -> dict[str, Any]:
    return {
        "name": f"models/{model_id}",
        "version": "001",
        "displayName": model_id,
        "description": f"Fake {model_id}.",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    }


def handle_models(call: Call) -> Reply:
    return json_reply(200, {"models": [_model_entry(model_id) for model_id in MODELS]})


def handle_model(call: Call) -> Reply:
    """Return the model object for GET .../models/{model}, whatever the model."""
    return json_reply(200, _model_entry(call.model or ""))
