"""Types shared by the fake upstream's HTTP engine and its wire-format modules.

A wire-format handler receives a `Call` (one parsed, recorded request plus the resolved
failure plan) and returns a `JsonReply` or a `StreamReply`. The responder writes that
reply, applying delays, compression, truncation and the other scripted behaviors.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.behaviors import Plan
    from tests.fakes.recording import RecordedRequest

#: Stands for the per-request id inside pre-encoded bodies and SSE frames. The responder
#: replaces it with a fresh id, so cached encodings can still carry unique ids.
ID_PLACEHOLDER = b"@RID@"


class Dialect(enum.Enum):
    """Error and wire dialect of a route, used to shape error bodies."""

    ANTHROPIC = "anthropic"
    OPENAI = "openai"
    CODEX = "codex"
    GEMINI = "gemini"
    CODE_ASSIST = "code_assist"
    PLAIN = "plain"


@dataclass(slots=True)
class Call:
    """One routed request, as passed to a wire-format handler."""

    record: RecordedRequest
    dialect: Dialect
    plan: Plan
    model: str | None = None
    """Model named in the path (Gemini routes); other handlers read it from the body."""

    @property
    def account(self) -> str:
        return self.record.account

    @property
    def body(self) -> Any:
        return self.record.json


@dataclass(slots=True)
class JsonReply:
    """A complete response with a Content-Length body."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = "application/json"
    """Content-Type header value; None sends no Content-Type header."""


@dataclass(slots=True)
class StreamReply:
    """A chunked response written frame by frame.

    Each frame is `(name, bytes)`. The name is the SSE event name, or a label such as
    "chunk", "usage", "done" or "keep-alive" for frames without one, and `Omit` matches
    on it. `stream_kind` ("anthropic", "chat", "responses" or "gemini") selects the shape
    of the in-band error event that `StreamError` writes, and `eol` its line end.
    """

    frames: Sequence[tuple[str, bytes]]
    stream_kind: str
    eol: bytes = b"\n"
    status: int = 200
    content_type: str = "text/event-stream"
    headers: list[tuple[str, str]] = field(default_factory=list)


Reply = JsonReply | StreamReply


def dumps(value: Any) -> bytes:
    """Encode compact JSON as UTF-8, keeping non-ASCII characters as raw UTF-8 bytes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def json_reply(status: int, value: Any, headers: list[tuple[str, str]] | None = None) -> JsonReply:
    return JsonReply(status, dumps(value), headers or [])


def sse_frame(name: str | None, data: bytes, eol: bytes) -> bytes:
    """Frame one SSE event, with an `event:` line when `name` is given."""
    if name is None:
        return b"data: " + data + eol + eol
    return b"event: " + name.encode() + eol + b"data: " + data + eol + eol


def sse_comment(text: str, eol: bytes) -> bytes:
    """Frame an SSE comment line such as `: keep-alive`, which clients must ignore."""
    return b": " + text.encode() + eol + eol
