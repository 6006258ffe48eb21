"""Gemini Code Assist wrapping: serving Gemini API requests through Gemini CLI OAuth accounts.

Gemini CLI logins cannot call the public Gemini API; they call Google's Code Assist service
(`{code-assist-url}/v1internal:{method}`), which takes and returns the same Gemini JSON inside
an envelope:

- generateContent and streamGenerateContent requests become
  `{"model": M, "project": P, "request": <Gemini request>}`;
- countTokens requests become `{"request": {"model": "models/M", "contents": [...]}}`;
- responses, and each SSE event of a stream, arrive as `{"response": <Gemini response>, ...}`.

This module converts between the two forms. It does no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

_CLIENT_PATH = re.compile(r"^/(?:v1|v1beta|v1alpha)/models/([^/:?]+):([A-Za-z]+)(?:\?.*)?$")

CODE_ASSIST_METHODS = frozenset({"generateContent", "streamGenerateContent", "countTokens"})


@dataclass(frozen=True)
class CodeAssistRoute:
    """The Code Assist destination of a Gemini API call.

    `path` is relative to the Code Assist base URL and includes `?alt=sse` for streams.
    """

    model: str
    method: str
    path: str
    stream: bool


def code_assist_route(client_path: str) -> CodeAssistRoute | None:
    """Map a Gemini API path such as `/v1beta/models/{m}:generateContent` to Code Assist.

    The client's query string (`alt`, `key`) is dropped; streams always use `?alt=sse`.
    Returns None for paths and methods Code Assist does not serve.
    """
    match = _CLIENT_PATH.match(client_path)
    if match is None:
        return None
    model, method = unquote(match.group(1)), match.group(2)
    if method not in CODE_ASSIST_METHODS:
        return None
    stream = method == "streamGenerateContent"
    path = f"/v1internal:{method}" + ("?alt=sse" if stream else "")
    return CodeAssistRoute(model=model, method=method, path=path, stream=stream)


def wrap_request(body: dict[str, Any], model: str, project: str) -> bytes:
    """Wrap a Gemini generateContent request body for Code Assist, as compact UTF-8 JSON."""
    return _dumps({"model": _bare_model(model), "project": project, "request": body})


def wrap_count_tokens(body: dict[str, Any], model: str) -> bytes:
    """Wrap a Gemini countTokens request body for Code Assist.

    Code Assist counts `contents` only. The Gemini API also accepts the contents inside
    `generateContentRequest`, so they are taken from there when the top level has none.
    The rest of that request (tools, system instruction) is not counted.
    """
    contents = body.get("contents")
    if contents is None:
        nested = body.get("generateContentRequest")
        if isinstance(nested, dict):
            contents = nested.get("contents")
    return _dumps(
        {"request": {"model": f"models/{_bare_model(model)}", "contents": contents or []}}
    )


def unwrap_response(body: bytes) -> bytes:
    """Return the Gemini response inside a Code Assist response.

    `{"response": X, "traceId": ...}` becomes X (with its `usageMetadata`); a JSON array of
    such objects (a stream fetched without `alt=sse`) is unwrapped element by element.
    Anything else (errors, countTokens responses, invalid JSON) is returned unchanged.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, list):
        if not any(_is_wrapped(item) for item in data):
            return body
        return _dumps([_unwrap_value(item) for item in data])
    if _is_wrapped(data):
        return _dumps(_unwrap_value(data))
    return body


class SSEUnwrapper:
    """Incremental rewriter of a Code Assist SSE stream into a Gemini API SSE stream.

    `feed()` takes the upstream bytes as they arrive and returns the bytes to send on. The
    data of each complete event is rewritten from `{"response": X}` to X. Every other line
    (`event:`, `id:`, comments, blank lines) and every line ending (LF, CRLF or CR) is kept.
    An event is emitted once its terminating blank line has arrived, so chunks may split
    anywhere, inside a line ending or inside a multi-byte character. Data that is not a
    wrapped JSON object (for example `[DONE]`) passes through unchanged. Call `finish()` at
    the end of the stream to flush an unterminated last event.

    NOTE: an event that never ends is buffered whole; the caller's body size limit bounds it.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0
        self._event: list[tuple[bytes, bytes]] = []

    def feed(self, chunk: bytes) -> bytes:
        """Add upstream bytes and return the rewritten bytes of every event they completed."""
        self._buffer += chunk
        output = bytearray()
        while (line := self._next_line(final=False)) is not None:
            self._event.append(line)
            if line[0] == b"":
                output += self._render_event()
        return bytes(output)

    def finish(self) -> bytes:
        """Return the rewritten rest of the stream, including an event without a blank line."""
        output = bytearray()
        while (line := self._next_line(final=True)) is not None:
            self._event.append(line)
            if line[0] == b"":
                output += self._render_event()
        output += self._render_event()
        return bytes(output)

    def _next_line(self, *, final: bool) -> tuple[bytes, bytes] | None:
        """Remove and return the next (line, line ending) from the buffer, if complete."""
        buffer = self._buffer
        position = self._scanned
        while position < len(buffer):
            byte = buffer[position]
            if byte == 0x0A:  # LF
                return self._cut(position, 1)
            if byte == 0x0D:  # CR, alone or followed by LF
                if position + 1 < len(buffer):
                    width = 2 if buffer[position + 1] == 0x0A else 1
                    return self._cut(position, width)
                if final:
                    return self._cut(position, 1)
                # The LF of a CRLF may arrive in the next chunk.
                self._scanned = position
                return None
            position += 1
        self._scanned = position
        if final and buffer:
            return self._cut(len(buffer), 0)
        return None

    def _cut(self, end: int, ending_width: int) -> tuple[bytes, bytes]:
        line = bytes(self._buffer[:end])
        ending = bytes(self._buffer[end : end + ending_width])
        del self._buffer[: end + ending_width]
        self._scanned = 0
        return line, ending

    def _render_event(self) -> bytes:
        lines, self._event = self._event, []
        data_indexes = [i for i, (line, _) in enumerate(lines) if line.startswith(b"data:")]
        rewritten = _rewrite_data([lines[i][0] for i in data_indexes]) if data_indexes else None

        output = bytearray()
        for index, (line, ending) in enumerate(lines):
            if rewritten is not None and index in data_indexes:
                if index != data_indexes[0]:
                    continue  # the joined data went out with the first data line
                line = b"data: " + rewritten
            output += line + ending
        return bytes(output)


def _rewrite_data(data_lines: list[bytes]) -> bytes | None:
    """Return the unwrapped JSON of an event's data lines, or None to keep them as they are."""
    values = []
    for line in data_lines:
        value = line[5:]
        if value.startswith(b" "):
            value = value[1:]
        values.append(value)
    payload = b"\n".join(values)
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not _is_wrapped(data):
        return None
    return _dumps(_unwrap_value(data))


def _is_wrapped(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("response"), dict)


def _unwrap_value(value: Any) -> Any:
    if not _is_wrapped(value):
        return value
    inner = dict(value["response"])
    # Usage normally sits inside `response`; keep a top-level copy if that is where it came.
    if "usageMetadata" in value and "usageMetadata" not in inner:
        inner["usageMetadata"] = value["usageMetadata"]
    return inner


def _bare_model(model: str) -> str:
    return model[len("models/") :] if model.startswith("models/") else model


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
