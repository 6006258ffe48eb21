"""OpenAI Responses API wire format, shared by /responses and the Codex backend.

A stream has the events response.created, response.in_progress,
response.output_item.added, response.content_part.added, one response.output_text.delta
per text piece, response.output_text.done, response.content_part.done,
response.output_item.done (the finished message item with its output_text) and
response.completed (the full response with `usage`). Every event carries a
sequence_number. See `tests.fakes.usage` for the usage fields.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import Any

from tests.fakes.content import response_text, split_text, value_from_schema
from tests.fakes.core import ID_PLACEHOLDER, Call, JsonReply, Reply, StreamReply, dumps, sse_comment, sse_frame
from tests.fakes.errors import reject
from tests.fakes.usage import responses_usage

_RESPONSE_ID = "resp_" + ID_PLACEHOLDER.decode()
_ITEM_ID = "msg_" + ID_PLACEHOLDER.decode()


def _response_text(call: Call, body: dict[str, Any]) -> str:
    text_options = body.get("text")
    if isinstance(text_options, dict):
        text_format = text_options.get("format")
        if isinstance(text_format, dict) and text_format.get("type") == "json_schema":
            return json.dumps(value_from_schema(text_format.get("schema") or {}), ensure_ascii=False)
    return response_text(call.account, call.plan.split_utf8)


def handle_responses(call: Call, always_stream: bool = False) -> Reply:
    body = call.body
    if not isinstance(body, dict):
        return reject(call.dialect, "The request body is not a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return reject(call.dialect, "Missing required parameter: 'model'.")

    text = _response_text(call, body)
    plan = call.plan
    if always_stream or body.get("stream") is True:
        eol = b"\r\n" if plan.crlf else b"\n"
        frames = _stream_frames(text, model, plan.events, not plan.no_usage, plan.split_utf8, eol)
        return StreamReply(frames, "responses", eol)
    return JsonReply(200, _response_body(text, model, not plan.no_usage))


def _message_item(text: str | None) -> dict[str, Any]:
    """Return the assistant message item, finished when `text` is given and in progress otherwise."""
    if text is None:
        return {"id": _ITEM_ID, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    return {
        "id": _ITEM_ID,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [_output_text(text)],
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _response(model: str, created_at: int, text: str | None, with_usage: bool) -> dict[str, Any]:
    """Return a response object, completed with the message when `text` is given."""
    response: dict[str, Any] = {
        "id": _RESPONSE_ID,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress" if text is None else "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": [] if text is None else [_message_item(text)],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "metadata": {},
    }
    if text is None:
        response["usage"] = None
    elif with_usage:
        response["usage"] = responses_usage()
    return response


@lru_cache(maxsize=1024)
def _response_body(text: str, model: str, with_usage: bool) -> bytes:
    return dumps(_response(model, int(time.time()), text, with_usage))


@lru_cache(maxsize=1024)
def _stream_frames(
    text: str, model: str, events: int, with_usage: bool, keepalive: bool, eol: bytes
) -> tuple[tuple[str, bytes], ...]:
    created_at = int(time.time())
    frames: list[tuple[str, bytes]] = []
    sequence_number = 0

    def event(name: str, **fields: Any) -> None:
        nonlocal sequence_number
        payload = {"type": name, "sequence_number": sequence_number, **fields}
        sequence_number += 1
        frames.append((name, sse_frame(name, dumps(payload), eol)))

    part = {"item_id": _ITEM_ID, "output_index": 0, "content_index": 0}
    event("response.created", response=_response(model, created_at, None, with_usage))
    event("response.in_progress", response=_response(model, created_at, None, with_usage))
    event("response.output_item.added", output_index=0, item=_message_item(None))
    event("response.content_part.added", **part, part=_output_text(""))
    if keepalive:
        frames.append(("keep-alive", sse_comment("keep-alive", eol)))
    for piece in split_text(text, events):
        event("response.output_text.delta", **part, delta=piece, logprobs=[])
    event("response.output_text.done", **part, text=text, logprobs=[])
    event("response.content_part.done", **part, part=_output_text(text))
    event("response.output_item.done", output_index=0, item=_message_item(text))
    if keepalive:
        frames.append(("keep-alive", sse_comment("keep-alive", eol)))
    event("response.completed", response=_response(model, created_at, text, with_usage))
    return tuple(frames)
