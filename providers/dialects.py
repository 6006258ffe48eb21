"""Client dialects: which API a route speaks, and errors in that API's own shape.

Every client request is matched to a `Route`: its dialect (Anthropic Messages, OpenAI Chat
Completions, OpenAI Responses, Gemini) and operation. Errors that cliproxy itself produces use
the dialect's error shape, so each SDK and CLI shows them as it shows its provider's errors:

- OpenAI: `{"error": {"message", "type", "code", "param"}}`
- Anthropic: `{"type": "error", "error": {"type", "message"}}`
- Gemini: `{"error": {"code", "message", "status"}}`
"""

import json
import re
from dataclasses import dataclass
from enum import StrEnum


class Dialect(StrEnum):
    ANTHROPIC = "anthropic"
    OPENAI_CHAT = "openai_chat"
    OPENAI_RESPONSES = "openai_responses"
    GEMINI = "gemini"


class Operation(StrEnum):
    GENERATE = "generate"
    COUNT_TOKENS = "count_tokens"
    COMPLETIONS = "completions"  # legacy OpenAI /v1/completions
    LIST_MODELS = "list_models"
    GET_MODEL = "get_model"


@dataclass(frozen=True)
class Route:
    """A matched client route. `path_model` and `gemini_method` are set for Gemini paths."""

    dialect: Dialect
    operation: Operation
    path_model: str | None = None
    gemini_method: str | None = None
    api_version: str = "v1"

    @property
    def name(self) -> str:
        """A short, stable route name for logs and metrics."""
        if self.dialect is Dialect.GEMINI and self.gemini_method:
            return f"gemini:{self.gemini_method}"
        return f"{self.dialect.value}:{self.operation.value}"


_GEMINI_ACTION = re.compile(
    r"^/(v1beta|v1alpha|v1)/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$"
)
_GEMINI_MODEL = re.compile(r"^/(v1beta|v1alpha|v1)/models/(?P<model>[^/:]+)$")

GEMINI_METHODS = ("generateContent", "streamGenerateContent", "countTokens")


def match_route(method: str, path: str) -> Route | None:
    """Return the route for a request line, or None when cliproxy does not serve it.

    `path` excludes the query string.
    """
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/")

    if method == "POST":
        if path == "/v1/messages":
            return Route(Dialect.ANTHROPIC, Operation.GENERATE)
        if path == "/v1/messages/count_tokens":
            return Route(Dialect.ANTHROPIC, Operation.COUNT_TOKENS)
        if path == "/v1/chat/completions":
            return Route(Dialect.OPENAI_CHAT, Operation.GENERATE)
        if path == "/v1/completions":
            return Route(Dialect.OPENAI_CHAT, Operation.COMPLETIONS)
        if path in ("/v1/responses", "/backend-api/codex/responses"):
            return Route(Dialect.OPENAI_RESPONSES, Operation.GENERATE)
        match = _GEMINI_ACTION.match(path)
        if match and match["method"] in GEMINI_METHODS:
            operation = (
                Operation.COUNT_TOKENS if match["method"] == "countTokens" else Operation.GENERATE
            )
            return Route(
                Dialect.GEMINI,
                operation,
                path_model=match["model"],
                gemini_method=match["method"],
                api_version=match.group(1),
            )
        return None

    if method == "GET":
        if path == "/v1/models":
            return Route(Dialect.OPENAI_CHAT, Operation.LIST_MODELS)
        if path in ("/v1beta/models", "/v1alpha/models"):
            return Route(Dialect.GEMINI, Operation.LIST_MODELS, api_version=path.split("/")[1])
        match = _GEMINI_MODEL.match(path)
        if match:
            return Route(
                Dialect.GEMINI, Operation.GET_MODEL, path_model=match["model"],
                api_version=match.group(1),
            )
        if path.startswith("/v1/models/"):
            return Route(Dialect.OPENAI_CHAT, Operation.GET_MODEL, path_model=path[len("/v1/models/") :])
    return None


def dialect_for_path(path: str) -> Dialect:
    """Guess the dialect of any path, for errors on routes that did not match."""
    if path.startswith("/v1/messages"):
        return Dialect.ANTHROPIC
    if path.startswith(("/v1beta", "/v1alpha")) or (path.startswith("/v1/models/") and ":" in path):
        return Dialect.GEMINI
    if path.startswith(("/v1/responses", "/backend-api/codex")):
        return Dialect.OPENAI_RESPONSES
    return Dialect.OPENAI_CHAT


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_object(
    dialect: Dialect, status: int, message: str, code: str | None = None, param: str | None = None
) -> dict:
    """Return the error as a JSON-ready object in the dialect's shape."""
    if dialect is Dialect.ANTHROPIC:
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if dialect is Dialect.GEMINI:
        state = _GEMINI_STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        return {"error": {"code": status, "message": message, "status": state}}
    kind = _OPENAI_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def error_body(
    dialect: Dialect, status: int, message: str, code: str | None = None, param: str | None = None
) -> bytes:
    """Return the error body as UTF-8 JSON bytes."""
    return json.dumps(error_object(dialect, status, message, code, param)).encode("utf-8")


def stream_error_event(dialect: Dialect, message: str, status: int = 502) -> bytes:
    """Return one SSE event that ends a stream with an error, in the dialect's framing."""
    if dialect is Dialect.ANTHROPIC:
        data = json.dumps(error_object(dialect, status, message))
        return f"event: error\ndata: {data}\n\n".encode("utf-8")
    if dialect is Dialect.OPENAI_RESPONSES:
        data = json.dumps(
            {"type": "error", "code": "upstream_error", "message": message, "param": None}
        )
        return f"event: error\ndata: {data}\n\n".encode("utf-8")
    data = json.dumps(error_object(dialect, status, message, code="upstream_error"))
    return f"data: {data}\n\n".encode("utf-8")
