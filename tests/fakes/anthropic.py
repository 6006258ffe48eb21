"""Anthropic Messages API wire format: /v1/messages (JSON and SSE), count_tokens and models.

A stream has the events message_start, content_block_start, ping, one content_block_delta
(text_delta) per text piece, content_block_stop, message_delta (stop_reason end_turn and
the usage totals) and message_stop. See `tests.fakes.usage` for the usage fields.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from tests.fakes.content import response_text, split_text, value_from_schema
from tests.fakes.core import ID_PLACEHOLDER, Call, JsonReply, Reply, StreamReply, dumps, json_reply, sse_comment, sse_frame
from tests.fakes.errors import reject
from tests.fakes.usage import COUNT_TOKENS, anthropic_start_usage, anthropic_usage

MODELS = ("claude-opus-4-8", "claude-sonnet-4-5", "claude-haiku-4-5")
"""Model ids that GET /v1/models lists."""

_MESSAGE_ID = "msg_" + ID_PLACEHOLDER.decode()
_MODELS_CREATED_AT = "2025-09-29T00:00:00Z"


def _schema(body: dict[str, Any]) -> Any:
    """Return the JSON schema of a structured-output request, or None."""
    for holder in (body.get("output_format"), (body.get("output_config") or {}).get("format")):
        if isinstance(holder, dict) and holder.get("type") == "json_schema":
            return holder.get("schema") or {}
    return None


def _response_text(call: Call, body: dict[str, Any]) -> str:
    schema = _schema(body)
    if schema is not None:
        return json.dumps(value_from_schema(schema), ensure_ascii=False)
    return response_text(call.account, call.plan.split_utf8)


def handle_messages(call: Call) -> Reply:
    body = call.body
    if not isinstance(body, dict):
        return reject(call.dialect, "The request body is not a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return reject(call.dialect, "model: Field required")
    if not isinstance(body.get("messages"), list):
        return reject(call.dialect, "messages: Field required", model)
    if not isinstance(body.get("max_tokens"), int):
        return reject(call.dialect, "max_tokens: Field required", model)

    text = _response_text(call, body)
    plan = call.plan
    if body.get("stream") is True:
        eol = b"\r\n" if plan.crlf else b"\n"
        frames = _stream_frames(text, model, plan.events, not plan.no_usage, plan.split_utf8, eol)
        return StreamReply(frames, "anthropic", eol)
    return JsonReply(200, _message_body(text, model, not plan.no_usage))


@lru_cache(maxsize=1024)
def _message_body(text: str, model: str, with_usage: bool) -> bytes:
    message: dict[str, Any] = {
        "id": _MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
    }
    if with_usage:
        message["usage"] = anthropic_usage()
    return dumps(message)


@lru_cache(maxsize=1024)
def _stream_frames(
    text: str, model: str, events: int, with_usage: bool, keepalive: bool, eol: bytes
) -> tuple[tuple[str, bytes], ...]:
    start_message: dict[str, Any] = {
        "id": _MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    if with_usage:
        start_message["usage"] = anthropic_start_usage()

    def event(name: str, payload: dict[str, Any]) -> tuple[str, bytes]:
        return name, sse_frame(name, dumps(payload), eol)

    frames = [
        event("message_start", {"type": "message_start", "message": start_message}),
        event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        event("ping", {"type": "ping"}),
    ]
    if keepalive:
        frames.append(("keep-alive", sse_comment("keep-alive", eol)))
    for piece in split_text(text, events):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        frames.append(event("content_block_delta", delta))
    if keepalive:
        frames.append(("keep-alive", sse_comment("keep-alive", eol)))
    frames.append(event("content_block_stop", {"type": "content_block_stop", "index": 0}))

    message_delta: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
    if with_usage:
        message_delta["usage"] = anthropic_usage()
    frames.append(event("message_delta", message_delta))
    frames.append(event("message_stop", {"type": "message_stop"}))
    return tuple(frames)


def handle_count_tokens(call: Call) -> Reply:
    body = call.body
    if not isinstance(body, dict):
        return reject(call.dialect, "The request body is not a JSON object.")
    if not isinstance(body.get("model"), str):
        return reject(call.dialect, "model: Field required")
    if not isinstance(body.get("messages"), list):
        return reject(call.dialect, "messages: Field required", body["model"])
    return json_reply(200, {"input_tokens": COUNT_TOKENS})


def _model_entry(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": model_id, "created_at": _MODELS_CREATED_AT}


def handle_models(call: Call) -> Reply:
    return json_reply(200, {
        "data": [_model_entry(model_id) for model_id in MODELS],
        "has_more": False,
        "first_id": MODELS[0],
        "last_id": MODELS[-1],
    })


def handle_model(call: Call) -> Reply:
    """Return the model object for GET /v1/models/{id}, whatever the id."""
    return json_reply(200, _model_entry(call.model or ""))
