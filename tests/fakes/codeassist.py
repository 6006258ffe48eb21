"""Gemini Code Assist wire format (Gemini CLI with Google OAuth accounts): .../v1internal:{action}.

Requests wrap a plain Gemini request: `{"model": M, "project": P, "request": {...}}`, and
generateContent and streamGenerateContent reject a body without `project` with a 400.
Responses wrap a plain GenerateContentResponse: `{"response": {...}, "traceId": ...}`, for
the JSON response and for every SSE event. countTokens takes `{"request": {...}}` and returns
`{"totalTokens": N}` unwrapped. Errors use the Gemini shape, also unwrapped.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from tests.fakes.core import ID_PLACEHOLDER, Call, JsonReply, Reply, StreamReply, dumps, json_reply, sse_frame
from tests.fakes.errors import reject
from tests.fakes.gemini import response_text_for, chunk_names, response_dict, stream_chunks
from tests.fakes.usage import COUNT_TOKENS

_TRACE_ID = ID_PLACEHOLDER.decode()


def _unwrap(call: Call) -> tuple[str, dict[str, Any]] | JsonReply:
    """Return (model, inner request), or the 400 response for a body Code Assist would reject."""
    body = call.body
    if not isinstance(body, dict):
        return reject(call.dialect, "Invalid JSON payload received. The body is not a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return reject(call.dialect, "Request is missing the 'model' field.")
    if not isinstance(body.get("project"), str) or not body["project"]:
        return reject(call.dialect, "Request is missing the 'project' field.", model)
    request = body.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("contents"), list):
        return reject(call.dialect, "Request is missing 'request.contents'.", model)
    return model, request


def handle_generate(call: Call) -> Reply:
    unwrapped = _unwrap(call)
    if isinstance(unwrapped, JsonReply):
        return unwrapped
    model, request = unwrapped
    return JsonReply(200, _response_body(response_text_for(call, request), model, not call.plan.no_usage))


@lru_cache(maxsize=1024)
def _response_body(text: str, model: str, with_usage: bool) -> bytes:
    return dumps({"response": response_dict(text, model, with_usage), "traceId": _TRACE_ID})


def handle_stream(call: Call) -> Reply:
    """Stream the response as SSE, whether or not the query has `alt=sse`."""
    unwrapped = _unwrap(call)
    if isinstance(unwrapped, JsonReply):
        return unwrapped
    model, request = unwrapped
    plan = call.plan
    eol = b"\r\n" if plan.crlf else b"\n"
    frames = _sse_frames(response_text_for(call, request), model, plan.events, not plan.no_usage, eol)
    return StreamReply(frames, "gemini", eol)


@lru_cache(maxsize=1024)
def _sse_frames(text: str, model: str, events: int, with_usage: bool, eol: bytes) -> tuple[tuple[str, bytes], ...]:
    chunks = stream_chunks(text, model, events, with_usage)
    names = chunk_names(len(chunks))
    return tuple(
        (name, sse_frame(None, dumps({"response": chunk, "traceId": _TRACE_ID}), eol))
        for name, chunk in zip(names, chunks)
    )


def handle_count_tokens(call: Call) -> Reply:
    body = call.body
    if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
        return reject(call.dialect, "Request is missing the 'request' field.")
    return json_reply(200, {"totalTokens": COUNT_TOKENS})
