"""Route table of the fake upstream: which handler and error dialect serve a method and path.

Routes match on the path suffix, so `/v1/...`, `/v1beta/...` and `/prefix/v1/...` all
work. GET .../models returns the Gemini shape when the path has a /v1beta/ segment or
the request carries `x-goog-api-key` or `?key=`, in the Anthropic shape when it carries
`anthropic-version` or `x-api-key`, and in the OpenAI shape otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from tests.fakes import anthropic, codeassist, codex, gemini, openai, responses
from tests.fakes.core import Call, Dialect, Reply
from tests.fakes.recording import RecordedRequest


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    dialect: Dialect
    handler: Callable[[Call], Reply]


ANTHROPIC_MESSAGES = Route("anthropic.messages", Dialect.ANTHROPIC, anthropic.handle_messages)
ANTHROPIC_COUNT_TOKENS = Route("anthropic.count_tokens", Dialect.ANTHROPIC, anthropic.handle_count_tokens)
ANTHROPIC_MODELS = Route("anthropic.models", Dialect.ANTHROPIC, anthropic.handle_models)
ANTHROPIC_MODEL = Route("anthropic.model", Dialect.ANTHROPIC, anthropic.handle_model)
OPENAI_CHAT = Route("openai.chat", Dialect.OPENAI, openai.handle_chat)
OPENAI_COMPLETIONS = Route("openai.completions", Dialect.OPENAI, openai.handle_completions)
OPENAI_RESPONSES = Route("openai.responses", Dialect.OPENAI, responses.handle_responses)
OPENAI_MODELS = Route("openai.models", Dialect.OPENAI, openai.handle_models)
OPENAI_MODEL = Route("openai.model", Dialect.OPENAI, openai.handle_model)
CODEX_RESPONSES = Route("codex.responses", Dialect.CODEX, codex.handle_codex)
GEMINI_GENERATE = Route("gemini.generate", Dialect.GEMINI, gemini.handle_generate)
GEMINI_STREAM = Route("gemini.stream", Dialect.GEMINI, gemini.handle_stream)
GEMINI_COUNT_TOKENS = Route("gemini.count_tokens", Dialect.GEMINI, gemini.handle_count_tokens)
GEMINI_MODELS = Route("gemini.models", Dialect.GEMINI, gemini.handle_models)
GEMINI_MODEL = Route("gemini.model", Dialect.GEMINI, gemini.handle_model)
CODE_ASSIST_GENERATE = Route("code_assist.generate", Dialect.CODE_ASSIST, codeassist.handle_generate)
CODE_ASSIST_STREAM = Route("code_assist.stream", Dialect.CODE_ASSIST, codeassist.handle_stream)
CODE_ASSIST_COUNT_TOKENS = Route("code_assist.count_tokens", Dialect.CODE_ASSIST, codeassist.handle_count_tokens)

_GEMINI_ACTIONS = {
    "generateContent": GEMINI_GENERATE,
    "streamGenerateContent": GEMINI_STREAM,
    "countTokens": GEMINI_COUNT_TOKENS,
}
_CODE_ASSIST_ACTIONS = {
    "generateContent": CODE_ASSIST_GENERATE,
    "streamGenerateContent": CODE_ASSIST_STREAM,
    "countTokens": CODE_ASSIST_COUNT_TOKENS,
}
_GEMINI_ACTION_PATH = re.compile(r"/models/([^/:]+):([A-Za-z]+)$")
_CODE_ASSIST_PATH = re.compile(r"/v1internal:([A-Za-z]+)$")
_MODEL_PATH = re.compile(r"/models/([^/:]+)$")


def _models_dialect(record: RecordedRequest) -> Dialect:
    if "/v1beta/" in record.path or record.header("x-goog-api-key") is not None or "key" in record.query:
        return Dialect.GEMINI
    if record.header("anthropic-version") is not None or record.header("x-api-key") is not None:
        return Dialect.ANTHROPIC
    return Dialect.OPENAI


_MODELS_ROUTES = {Dialect.GEMINI: GEMINI_MODELS, Dialect.ANTHROPIC: ANTHROPIC_MODELS, Dialect.OPENAI: OPENAI_MODELS}
_MODEL_ROUTES = {Dialect.GEMINI: GEMINI_MODEL, Dialect.ANTHROPIC: ANTHROPIC_MODEL, Dialect.OPENAI: OPENAI_MODEL}


def match_route(record: RecordedRequest) -> tuple[Route, str | None] | None:
    """Return the route for a request and the model named in its path, or None for no route."""
    path = record.path
    if record.method == "POST":
        return _match_post(path)
    if record.method == "GET":
        if path.endswith("/models"):
            return _MODELS_ROUTES[_models_dialect(record)], None
        match = _MODEL_PATH.search(path)
        if match:
            return _MODEL_ROUTES[_models_dialect(record)], unquote(match[1])
    return None


def _match_post(path: str) -> tuple[Route, str | None] | None:
    if path.endswith("/backend-api/codex/responses"):
        return CODEX_RESPONSES, None
    match = _CODE_ASSIST_PATH.search(path)
    if match:
        route = _CODE_ASSIST_ACTIONS.get(match[1])
        return (route, None) if route else None
    match = _GEMINI_ACTION_PATH.search(path)
    if match:
        route = _GEMINI_ACTIONS.get(match[2])
        return (route, unquote(match[1])) if route else None
    if path.endswith("/messages/count_tokens"):
        return ANTHROPIC_COUNT_TOKENS, None
    if path.endswith("/messages"):
        return ANTHROPIC_MESSAGES, None
    if path.endswith("/chat/completions"):
        return OPENAI_CHAT, None
    if path.endswith("/completions"):
        return OPENAI_COMPLETIONS, None
    if path.endswith("/responses"):
        return OPENAI_RESPONSES, None
    return None
