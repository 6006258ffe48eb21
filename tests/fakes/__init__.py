"""Fake AI provider upstreams (Anthropic, OpenAI Chat and Responses, Codex, Gemini, Code Assist).

Tests point the proxy's accounts at `FakeUpstream.account_url(name)`, script failures per
account with the behaviors below, and assert on the recorded requests. Run it as a process
with `python -m tests.fakes --port N`.
"""

from tests.fakes.behaviors import (
    CRLF,
    DEFAULT_EVENTS,
    RATE_LIMIT_HINTS,
    ApiError,
    Behavior,
    Combined,
    Delay,
    DropAfter,
    Gzip,
    NoUsage,
    Omit,
    Slow,
    SplitUtf8,
    Status,
    StreamError,
    behavior_from_spec,
    forbidden,
    invalid_request,
    model_not_found,
    payment_required,
    rate_limited,
    server_error,
    unauthorized,
)
from tests.fakes.content import UTF8_SAMPLE, response_text
from tests.fakes.recording import RecordedRequest
from tests.fakes.server import FakeUpstream
from tests.fakes.usage import (
    ANTHROPIC_START_OUTPUT_TOKENS,
    ANTHROPIC_USAGE,
    CHAT_USAGE,
    COUNT_TOKENS,
    GEMINI_USAGE,
    RESPONSES_USAGE,
    USAGE,
    Usage,
)

__all__ = [
    "ANTHROPIC_START_OUTPUT_TOKENS",
    "ANTHROPIC_USAGE",
    "CHAT_USAGE",
    "COUNT_TOKENS",
    "CRLF",
    "DEFAULT_EVENTS",
    "GEMINI_USAGE",
    "RATE_LIMIT_HINTS",
    "RESPONSES_USAGE",
    "USAGE",
    "UTF8_SAMPLE",
    "ApiError",
    "Behavior",
    "Combined",
    "Delay",
    "DropAfter",
    "FakeUpstream",
    "Gzip",
    "NoUsage",
    "Omit",
    "RecordedRequest",
    "Slow",
    "SplitUtf8",
    "Status",
    "StreamError",
    "Usage",
    "response_text",
    "behavior_from_spec",
    "forbidden",
    "invalid_request",
    "model_not_found",
    "payment_required",
    "rate_limited",
    "server_error",
    "unauthorized",
]
