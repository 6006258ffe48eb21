"""Token usage reported by upstream responses, read from JSON bodies and from SSE streams.

Counts come only from the usage fields the upstream itself sends, and nothing is estimated.
A parser returns `None` when the response carried no usage (for example a stream cut before
its usage event), and callers record that as unknown, never as zero tokens.

`SSEUsageObserver` reads a copy of a stream while the proxy forwards the original bytes
untouched. It keeps only the current incomplete event and decodes JSON only for events
that a byte scan shows can carry usage.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

logger = logging.getLogger(__name__)


class UsageFormat(StrEnum):
    """Wire format of an upstream response, which decides where its usage fields are."""

    ANTHROPIC = "anthropic"
    OPENAI_CHAT = "openai_chat"
    OPENAI_RESPONSES = "openai_responses"
    GEMINI = "gemini"


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one response, normalized across formats.

    `input` excludes cache reads and cache writes, so `input`, `cache_read`, `cache_write`
    and `output` do not overlap and add up to `total`. `reasoning` is the part of `output`
    spent on reasoning (thinking) tokens and is not added again.
    """

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0

    @property
    def prompt(self) -> int:
        """All input tokens: uncached input plus cache reads and cache writes."""
        return self.input + self.cache_read + self.cache_write

    @property
    def total(self) -> int:
        return self.prompt + self.output


def _count(value: Any) -> int:
    """Return a token count field as an int, treating missing, null or invalid values as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, int(value))


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def usage_from_anthropic(fields: dict[str, Any]) -> Usage:
    """Convert an Anthropic Messages `usage` object.

    Anthropic's `input_tokens` already excludes `cache_read_input_tokens` and
    `cache_creation_input_tokens`, and the API reports no separate thinking count.
    """
    return Usage(
        input=_count(fields.get("input_tokens")),
        output=_count(fields.get("output_tokens")),
        cache_read=_count(fields.get("cache_read_input_tokens")),
        cache_write=_count(fields.get("cache_creation_input_tokens")),
    )


def usage_from_openai(fields: dict[str, Any]) -> Usage:
    """Convert an OpenAI `usage` object from Chat Completions or from the Responses API.

    Chat Completions names the counts `prompt_tokens`/`completion_tokens` and the Responses
    API names them `input_tokens`/`output_tokens`. In both, the prompt count includes cached
    tokens and the completion count includes reasoning tokens.
    """
    prompt = _count(fields.get("prompt_tokens", fields.get("input_tokens")))
    completion = _count(fields.get("completion_tokens", fields.get("output_tokens")))

    prompt_details = _mapping(
        fields.get("prompt_tokens_details", fields.get("input_tokens_details"))
    )
    completion_details = _mapping(
        fields.get("completion_tokens_details", fields.get("output_tokens_details"))
    )
    cached = _count(prompt_details.get("cached_tokens"))
    if not cached:
        # DeepSeek's OpenAI-compatible API reports cache hits in a top-level field.
        cached = _count(fields.get("prompt_cache_hit_tokens"))
    cached = min(cached, prompt)

    return Usage(
        input=prompt - cached,
        output=completion,
        cache_read=cached,
        reasoning=_count(completion_details.get("reasoning_tokens")),
    )


def usage_from_gemini(metadata: dict[str, Any]) -> Usage:
    """Convert a Gemini `usageMetadata` object.

    `promptTokenCount` includes `cachedContentTokenCount`. `candidatesTokenCount` does not
    include `thoughtsTokenCount`, so thinking tokens are added to `output` here.
    """
    prompt = _count(metadata.get("promptTokenCount")) + _count(
        metadata.get("toolUsePromptTokenCount")
    )
    cached = min(_count(metadata.get("cachedContentTokenCount")), prompt)
    thoughts = _count(metadata.get("thoughtsTokenCount"))
    return Usage(
        input=prompt - cached,
        output=_count(metadata.get("candidatesTokenCount")) + thoughts,
        cache_read=cached,
        reasoning=thoughts,
    )


def _gemini_metadata(document: Any) -> dict[str, Any] | None:
    """Return `usageMetadata` of a Gemini response, unwrapping Code Assist's `{"response": ...}`."""
    if not isinstance(document, dict):
        return None
    metadata = document.get("usageMetadata")
    if isinstance(metadata, dict):
        return metadata
    return _gemini_metadata(document.get("response")) if "response" in document else None


def parse_json_usage(fmt: UsageFormat | str, body: bytes) -> Usage | None:
    """Parse the usage of a complete (non-streamed) JSON response.

    Returns None when the body is not JSON or carries no usage object. Raises ValueError
    for an unknown format name.
    """
    fmt = UsageFormat(fmt)
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None

    if fmt is UsageFormat.GEMINI:
        # A Gemini streamGenerateContent response without `alt=sse` is a JSON array of chunks.
        chunks = document if isinstance(document, list) else [document]
        for chunk in reversed(chunks):
            metadata = _gemini_metadata(chunk)
            if metadata is not None:
                return usage_from_gemini(metadata)
        return None

    if not isinstance(document, dict):
        return None
    if fmt is UsageFormat.OPENAI_RESPONSES and "usage" not in document:
        document = _mapping(document.get("response"))
    fields = document.get("usage")
    if not isinstance(fields, dict):
        return None
    if fmt is UsageFormat.ANTHROPIC:
        return usage_from_anthropic(fields)
    return usage_from_openai(fields)


# Two consecutive SSE line endings end an event. Any of CRLF, LF or CR may end a line, and
# the atomic groups stop `\r\n` from being read as two line endings. Streams without any CR
# take a faster path that looks only for `\n\n`.
_EVENT_END = re.compile(rb"(?>\r\n|\n|\r)(?>\r\n|\n|\r)")
# Bytes of an event end that may sit at the end of one chunk while the rest follows.
_EVENT_END_OVERLAP = 3

# A JSON object key is a quoted name preceded by `{`, `,` or whitespace and followed by `:`.
# Inside a JSON string every quote is escaped, so in valid JSON such a match is a real key,
# never text the model wrote.
_KEY_PRECEDING_BYTES = frozenset(b"{, \t\r\n")
_COLON = re.compile(rb"[ \t\r\n]*:[ \t\r\n]*")
_RESPONSES_TERMINAL_TYPE = re.compile(
    rb'"type"\s*:\s*"response\.(?:completed|incomplete|failed)"'
)

_ANTHROPIC_USAGE_EVENTS = (b"message_start", b"message_delta")
_RESPONSES_TERMINAL_EVENTS = (b"response.completed", b"response.incomplete", b"response.failed")

DEFAULT_MAX_EVENT_BYTES = 1 << 20

_JSON_DECODER = json.JSONDecoder()


def _find_last_key(data: bytes | bytearray, quoted_key: bytes) -> int:
    """Return the offset of the value of the last JSON key `quoted_key` in data, or -1.

    Scans from the end, because the usage keys the observer looks for follow the content.
    """
    end = len(data)
    while True:
        index = data.rfind(quoted_key, 0, end)
        if index <= 0:
            return -1
        if data[index - 1] in _KEY_PRECEDING_BYTES:
            colon = _COLON.match(data, index + len(quoted_key))
            if colon is not None:
                return colon.end()
        end = index + len(quoted_key) - 1


class SSEUsageObserver:
    """Incremental usage reader for one SSE response stream.

    `feed` accepts raw chunks whose edges need not follow event or line edges. They may
    also split multi-byte characters. The observer copies what it needs and never changes
    or keeps the caller's buffers. It buffers only the current incomplete event. An event
    larger than `max_event_bytes` is skipped and counted in `events_skipped`.

    Per format, the usage comes from:
    - anthropic: `message_start` (`message.usage`) and `message_delta` (`usage`). Each
      field takes its last reported value, because `message_delta` carries running totals.
    - openai_chat: the last chunk with a non-null `usage`, which is the final chunk when the
      request set `stream_options.include_usage`.
    - openai_responses: `response.usage` of the terminal `response.completed`,
      `response.incomplete` or `response.failed` event.
    - gemini: `usageMetadata` of the last chunk that has one, also inside Code Assist's
      `{"response": ...}` wrapper. Only the last one is decoded, when `usage` is read.

    Events that cannot carry usage are recognized by their `event:` name or a byte search
    and are never JSON-decoded.

    NOTE: only SSE framing is read. A Gemini stream requested without `alt=sse` is a
    streamed JSON array and yields no usage here.
    """

    def __init__(self, fmt: UsageFormat | str, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES):
        self.format = UsageFormat(fmt)
        self.max_event_bytes = max_event_bytes
        self.saw_terminal_event = False
        self.events_seen = 0
        self.events_skipped = 0
        self.decode_errors = 0

        self._buffer = bytearray()
        self._saw_cr = False
        self._skipping = False
        self._last_usage: Usage | None = None
        self._anthropic_fields: dict[str, Any] = {}
        # Bytes of the last Gemini chunk from its `usageMetadata` value on, not yet decoded.
        self._gemini_pending: bytearray | None = None
        self._handle_event = {
            UsageFormat.ANTHROPIC: self._handle_anthropic,
            UsageFormat.OPENAI_CHAT: self._handle_openai_chat,
            UsageFormat.OPENAI_RESPONSES: self._handle_responses,
            UsageFormat.GEMINI: self._handle_gemini,
        }[self.format]

    @property
    def pending_bytes(self) -> int:
        """Size of the buffered incomplete event, in bytes."""
        return len(self._buffer)

    @property
    def usage(self) -> Usage | None:
        """Usage seen so far, or None if no usage field has arrived."""
        if self.format is UsageFormat.ANTHROPIC:
            return usage_from_anthropic(self._anthropic_fields) if self._anthropic_fields else None
        if self._gemini_pending is not None:
            self._decode_gemini_pending()
        return self._last_usage

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Read one chunk of the stream and handle every event it completes."""
        buffer = self._buffer
        search_from = max(0, len(buffer) - _EVENT_END_OVERLAP)
        buffer += chunk
        if not self._saw_cr and buffer.find(b"\r", search_from) >= 0:
            self._saw_cr = True

        event_start = 0
        while True:
            if self._saw_cr:
                match = _EVENT_END.search(buffer, search_from)
                if match is None:
                    break
                end_start, end_stop = match.span()
            else:
                end_start = buffer.find(b"\n\n", search_from)
                if end_start < 0:
                    break
                end_stop = end_start + 2

            if self._skipping:
                self._skipping = False
            else:
                self._handle_block(buffer[event_start:end_start])
            event_start = search_from = end_stop
        del buffer[:event_start]

        if len(buffer) > self.max_event_bytes:
            # Drop the oversized event but keep its last bytes, which may begin its end mark.
            if not self._skipping:
                self._skipping = True
                self.events_skipped += 1
                logger.debug("SSE event over %d bytes skipped", self.max_event_bytes)
            del buffer[:-_EVENT_END_OVERLAP]

    def _handle_block(self, block: bytearray) -> None:
        # Fast path for the two usual shapes: `data: …` and `event: …` + `data: …`.
        name = b""
        if block.startswith(b"event:"):
            newline = block.find(b"\n")
            if newline > 0 and not self._saw_cr:
                name = bytes(block[6:newline].strip())
                rest = block[newline + 1 :]
                if rest.startswith(b"data:") and b"\n" not in rest:
                    self._dispatch(name, rest[5:])
                    return
        elif block.startswith(b"data:") and b"\n" not in block and b"\r" not in block:
            self._dispatch(name, block[5:])
            return

        name = b""
        data_lines: list[bytes] = []
        for line in block.splitlines():
            if line.startswith(b"data:"):
                value = line[5:]
                data_lines.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b"event:"):
                name = bytes(line[6:].strip())
        if data_lines:
            self.events_seen += 1
            self._handle_event(name, b"\n".join(data_lines))
        # A block without data is a comment such as `: keep-alive` or a stray line end.

    def _dispatch(self, name: bytes, value: bytearray) -> None:
        self.events_seen += 1
        self._handle_event(name, value[1:] if value.startswith(b" ") else value)

    def _decode(self, data: bytes | bytearray) -> dict[str, Any] | None:
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            self.decode_errors += 1
            return None
        return document if isinstance(document, dict) else None

    def _handle_anthropic(self, name: bytes, data: bytearray) -> None:
        if name:
            if name == b"message_stop":
                self.saw_terminal_event = True
                return
            if name not in _ANTHROPIC_USAGE_EVENTS:
                return
        elif _find_last_key(data, b'"usage"') < 0:
            # Without an `event:` line, only the data shows the type.
            if b"message_stop" in data:
                document = self._decode(data)
                if document is not None and document.get("type") == "message_stop":
                    self.saw_terminal_event = True
            return

        document = self._decode(data)
        if document is None:
            return
        event_type = document.get("type")
        if event_type == "message_start":
            fields = _mapping(_mapping(document.get("message")).get("usage"))
        elif event_type == "message_delta":
            fields = _mapping(document.get("usage"))
        else:
            return
        for field_name, value in fields.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._anthropic_fields[field_name] = value

    def _handle_openai_chat(self, name: bytes, data: bytearray) -> None:
        if data.strip() == b"[DONE]":
            self.saw_terminal_event = True
            return
        value = _find_last_key(data, b'"usage"')
        if value < 0 or data[value : value + 1] != b"{":
            return
        document = self._decode(data)
        if document is None:
            return
        fields = document.get("usage")
        if isinstance(fields, dict):
            self._last_usage = usage_from_openai(fields)

    def _handle_responses(self, name: bytes, data: bytearray) -> None:
        if name:
            if name not in _RESPONSES_TERMINAL_EVENTS:
                return
        elif _RESPONSES_TERMINAL_TYPE.search(data) is None:
            return

        document = self._decode(data)
        if document is None:
            return
        if document.get("type") not in ("response.completed", "response.incomplete",
                                        "response.failed"):
            return
        self.saw_terminal_event = True
        fields = _mapping(document.get("response")).get("usage")
        if isinstance(fields, dict):
            self._last_usage = usage_from_openai(fields)

    def _handle_gemini(self, name: bytes, data: bytearray) -> None:
        if _find_last_key(data, b'"finishReason"') >= 0:
            self.saw_terminal_event = True
        # The top-level `usageMetadata` follows `candidates`, so the last match is the top-level
        # key even when a function call's arguments contain a key of the same name.
        value = _find_last_key(data, b'"usageMetadata"')
        if value >= 0 and data[value : value + 1] == b"{":
            self._gemini_pending = data[value:]

    def _decode_gemini_pending(self) -> None:
        pending, self._gemini_pending = self._gemini_pending, None
        assert pending is not None
        try:
            metadata, _ = _JSON_DECODER.raw_decode(pending.decode("utf-8", "replace"))
        except ValueError:
            # NOTE: a malformed last `usageMetadata` leaves the usage of an earlier read of
            # `usage`, which may be None, because earlier chunks are not decoded.
            self.decode_errors += 1
            return
        if isinstance(metadata, dict):
            self._last_usage = usage_from_gemini(metadata)
