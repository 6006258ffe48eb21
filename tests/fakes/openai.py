"""OpenAI Chat Completions wire format: /chat/completions, legacy /completions and /models.

A Chat stream is `data: {chunk}` frames: a first chunk with the assistant role, one chunk
per text piece, a chunk with finish_reason "stop", and then `data: [DONE]`. When the
request sets `stream_options.include_usage`, every chunk has `"usage": null` and a last
chunk with `choices: []` carries the usage. See `tests.fakes.usage` for the usage fields.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

from tests.fakes.content import response_text, split_text, value_from_schema
from tests.fakes.core import ID_PLACEHOLDER, Call, JsonReply, Reply, StreamReply, dumps, json_reply, sse_frame
from tests.fakes.errors import reject
from tests.fakes.usage import chat_usage

MODELS = ("gpt-5", "gpt-5-codex", "gpt-4.1-mini")
"""Model ids that the OpenAI-shaped GET /v1/models lists."""

_CHAT_ID = "chatcmpl-" + ID_PLACEHOLDER.decode()
_COMPLETION_ID = "cmpl-" + ID_PLACEHOLDER.decode()
_MODELS_CREATED = 1_750_000_000


def _chat_text(call: Call, body: dict[str, Any]) -> str:
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            return json.dumps(value_from_schema(schema), ensure_ascii=False)
        if response_format.get("type") == "json_object":
            return json.dumps({"text": response_text(call.account)}, ensure_ascii=False)
    return response_text(call.account, call.plan.split_utf8)


def _validate(call: Call, body: Any, field: str) -> str | JsonReply:
    """Return the request's model, or the error response for a body the API would reject."""
    if not isinstance(body, dict):
        return reject(call.dialect, "The request body is not a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return reject(call.dialect, "you must provide a model parameter")
    if field not in body:
        return reject(call.dialect, f"Missing required parameter: '{field}'.", model)
    return model


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def handle_chat(call: Call) -> Reply:
    body = call.body
    model = _validate(call, body, "messages")
    if isinstance(model, JsonReply):
        return model

    text = _chat_text(call, body)
    plan = call.plan
    if body.get("stream") is True:
        eol = b"\r\n" if plan.crlf else b"\n"
        include_usage = _include_usage(body) and not plan.no_usage
        return StreamReply(_chat_frames(text, model, plan.events, include_usage, eol), "chat", eol)
    return JsonReply(200, _chat_body(text, model, not plan.no_usage))


@lru_cache(maxsize=1024)
def _chat_body(text: str, model: str, with_usage: bool) -> bytes:
    completion: dict[str, Any] = {
        "id": _CHAT_ID,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "system_fingerprint": None,
    }
    if with_usage:
        completion["usage"] = chat_usage()
    return dumps(completion)


@lru_cache(maxsize=1024)
def _chat_frames(text: str, model: str, events: int, include_usage: bool, eol: bytes) -> tuple[tuple[str, bytes], ...]:
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": _CHAT_ID,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if include_usage:
            payload["usage"] = usage
        return sse_frame(None, dumps(payload), eol)

    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    frames = [("chunk", chunk(choice({"role": "assistant", "content": "", "refusal": None})))]
    frames.extend(("chunk", chunk(choice({"content": piece}))) for piece in split_text(text, events))
    frames.append(("chunk", chunk(choice({}, "stop"))))
    if include_usage:
        frames.append(("usage", chunk([], chat_usage())))
    frames.append(("done", sse_frame(None, b"[DONE]", eol)))
    return tuple(frames)


def handle_completions(call: Call) -> Reply:
    """Serve the legacy text completions API, JSON or SSE."""
    body = call.body
    model = _validate(call, body, "prompt")
    if isinstance(model, JsonReply):
        return model

    text = response_text(call.account, call.plan.split_utf8)
    plan = call.plan
    if body.get("stream") is True:
        eol = b"\r\n" if plan.crlf else b"\n"
        include_usage = _include_usage(body) and not plan.no_usage
        return StreamReply(_completion_frames(text, model, plan.events, include_usage, eol), "chat", eol)

    completion: dict[str, Any] = {
        "id": _COMPLETION_ID,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
    }
    if not plan.no_usage:
        usage = chat_usage()
        completion["usage"] = {key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return json_reply(200, completion)


@lru_cache(maxsize=256)
def _completion_frames(text: str, model: str, events: int, include_usage: bool, eol: bytes) -> tuple[tuple[str, bytes], ...]:
    created = int(time.time())

    def chunk(piece: str, finish_reason: str | None) -> tuple[str, bytes]:
        payload = {
            "id": _COMPLETION_ID,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"text": piece, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
        }
        return "chunk", sse_frame(None, dumps(payload), eol)

    frames = [chunk(piece, None) for piece in split_text(text, events)]
    frames.append(chunk("", "stop"))
    if include_usage:
        usage = chat_usage()
        payload = {
            "id": _COMPLETION_ID,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [],
            "usage": {key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")},
        }
        frames.append(("usage", sse_frame(None, dumps(payload), eol)))
    frames.append(("done", sse_frame(None, b"[DONE]", eol)))
    return tuple(frames)


def _model_entry(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": _MODELS_CREATED, "owned_by": "openai"}


def handle_models(call: Call) -> Reply:
    return json_reply(200, {"object": "list", "data": [_model_entry(model_id) for model_id in MODELS]})


def handle_model(call: Call) -> Reply:
    """Return the model object for GET /v1/models/{id}, whatever the id."""
    return json_reply(200, _model_entry(call.model or ""))
