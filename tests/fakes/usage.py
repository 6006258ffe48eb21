"""Fixed token counts that every fake success response reports, and how each format carries them.

All success responses report `USAGE`, so a test can compare what a proxy counted with these
constants. Each wire format keeps its own meaning of the numbers:

Anthropic Messages, `usage` (`ANTHROPIC_USAGE`):
    input_tokens=input (11), output_tokens=output (7), cache_read_input_tokens=cache_read (3),
    cache_creation_input_tokens=cache_write (2). Anthropic counts cache reads and writes apart
    from input_tokens. It has no reasoning field, so `reasoning` is not sent. In a stream,
    message_start carries `message.usage` with the three input fields and output_tokens=1
    (`ANTHROPIC_START_OUTPUT_TOKENS`, as the real API sends a small placeholder there).
    message_delta carries the totals, all four fields, with the final output_tokens=7.
OpenAI Chat Completions, `usage` (`CHAT_USAGE`):
    prompt_tokens=input (11), completion_tokens=output (7), total_tokens=input+output (18),
    prompt_tokens_details.cached_tokens=cache_read (3),
    completion_tokens_details.reasoning_tokens=reasoning (5). Cached and reasoning tokens are
    parts of the prompt and completion counts. cache_write is not sent.
OpenAI Responses and the Codex backend, `response.usage` (`RESPONSES_USAGE`):
    input_tokens=11, output_tokens=7, total_tokens=18, input_tokens_details.cached_tokens=3,
    output_tokens_details.reasoning_tokens=5, with the same meaning as Chat.
Gemini and Code Assist, `usageMetadata` (`GEMINI_USAGE`):
    promptTokenCount=input (11), candidatesTokenCount=output (7),
    cachedContentTokenCount=cache_read (3), thoughtsTokenCount=reasoning (5),
    totalTokenCount=input+output+reasoning (23), because Gemini counts thoughts apart from
    candidates. In a stream only the last chunk carries usageMetadata.
Token counting returns `COUNT_TOKENS` (11): Anthropic `{"input_tokens": 11}`, Gemini and
Code Assist `{"totalTokens": 11}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one response, before they are mapped into a wire format."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    reasoning: int


USAGE = Usage(input=11, output=7, cache_read=3, cache_write=2, reasoning=5)
COUNT_TOKENS = USAGE.input
ANTHROPIC_START_OUTPUT_TOKENS = 1


def anthropic_usage(usage: Usage = USAGE) -> dict[str, Any]:
    return {
        "input_tokens": usage.input,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
        "output_tokens": usage.output,
    }


def anthropic_start_usage(usage: Usage = USAGE) -> dict[str, Any]:
    return anthropic_usage(usage) | {"output_tokens": ANTHROPIC_START_OUTPUT_TOKENS}


def chat_usage(usage: Usage = USAGE) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning, "audio_tokens": 0},
    }


def responses_usage(usage: Usage = USAGE) -> dict[str, Any]:
    return {
        "input_tokens": usage.input,
        "input_tokens_details": {"cached_tokens": usage.cache_read},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.input + usage.output,
    }


def gemini_usage(usage: Usage = USAGE) -> dict[str, Any]:
    return {
        "promptTokenCount": usage.input,
        "candidatesTokenCount": usage.output,
        "cachedContentTokenCount": usage.cache_read,
        "thoughtsTokenCount": usage.reasoning,
        "totalTokenCount": usage.input + usage.output + usage.reasoning,
    }


ANTHROPIC_USAGE = anthropic_usage()
CHAT_USAGE = chat_usage()
RESPONSES_USAGE = responses_usage()
GEMINI_USAGE = gemini_usage()
