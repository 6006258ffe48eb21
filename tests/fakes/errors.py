"""Error responses of the fake upstream, shaped per dialect, with rate-limit reset hints.

Body shapes:
- Anthropic: `{"type": "error", "error": {"type": "rate_limit_error", "message": ...}, "request_id": ...}`.
- OpenAI Chat, Responses and Codex: `{"error": {"message", "type", "code", "param"}}`.
- Gemini and Code Assist: `{"error": {"code": 429, "message": ..., "status": "RESOURCE_EXHAUSTED"}}`.
  Code Assist errors are not wrapped in `{"response": ...}`.
"""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass
from typing import Any

from tests.fakes.behaviors import ApiError, Status
from tests.fakes.core import ID_PLACEHOLDER, Dialect, JsonReply, dumps, sse_frame


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """How one kind of error reads in each dialect."""

    anthropic_type: str
    openai_type: str
    openai_code: str | None
    gemini_status: str
    message: str


ERROR_KINDS: dict[str, ErrorKind] = {
    "rate_limited": ErrorKind(
        "rate_limit_error", "requests", "rate_limit_exceeded", "RESOURCE_EXHAUSTED",
        "Rate limit reached for this account. Retry later.",
    ),
    "overloaded": ErrorKind(
        "overloaded_error", "server_error", "server_is_overloaded", "UNAVAILABLE",
        "The service is overloaded. Retry later.",
    ),
    "server_error": ErrorKind(
        "api_error", "server_error", None, "INTERNAL", "Internal server error.",
    ),
    "unauthorized": ErrorKind(
        "authentication_error", "invalid_request_error", "invalid_api_key", "UNAUTHENTICATED",
        "Invalid API key.",
    ),
    "forbidden": ErrorKind(
        "permission_error", "permission_error", "permission_denied", "PERMISSION_DENIED",
        "This credential is not allowed to make this request.",
    ),
    "payment_required": ErrorKind(
        "billing_error", "insufficient_quota", "insufficient_quota", "FAILED_PRECONDITION",
        "The credit balance of this account is too low.",
    ),
    "model_not_found": ErrorKind(
        "not_found_error", "invalid_request_error", "model_not_found", "NOT_FOUND",
        "The model {model} does not exist or this account has no access to it.",
    ),
    "invalid_request": ErrorKind(
        "invalid_request_error", "invalid_request_error", None, "INVALID_ARGUMENT",
        "Invalid request.",
    ),
}

# Gemini status names for 5xx codes that are not "overloaded".
_GEMINI_5XX_STATUS = {500: "INTERNAL", 501: "UNIMPLEMENTED", 504: "DEADLINE_EXCEEDED"}
_ANTHROPIC_5XX_TYPE = {504: "timeout_error"}


def error_payload(error: ApiError, dialect: Dialect, model: str | None) -> dict[str, Any]:
    """Return the JSON error body of `error` in `dialect`, without rate-limit hint details."""
    kind = ERROR_KINDS.get(error.kind)
    if kind is None:
        raise ValueError(f"unknown error kind {error.kind!r}; expected one of {', '.join(ERROR_KINDS)}")
    message = error.message or kind.message.format(model=model or "(none)")

    if dialect is Dialect.ANTHROPIC:
        error_type = kind.anthropic_type
        if error.kind == "server_error":
            error_type = _ANTHROPIC_5XX_TYPE.get(error.code, error_type)
        return {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": "req_" + ID_PLACEHOLDER.decode(),
        }

    if dialect in (Dialect.GEMINI, Dialect.CODE_ASSIST):
        status = kind.gemini_status
        if error.kind == "server_error":
            status = _GEMINI_5XX_STATUS.get(error.code, "UNAVAILABLE")
        return {"error": {"code": error.code, "message": message, "status": status}}

    param = "model" if error.kind == "model_not_found" else None
    return {"error": {"message": message, "type": kind.openai_type, "code": kind.openai_code, "param": param}}


def _hint_headers_and_body(error: ApiError, body: dict[str, Any]) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Add the reset hint of a rate-limit error to its headers or body."""
    seconds = error.seconds
    now = time.time()
    hint = error.hint

    if hint == "retry-after-seconds":
        return [("Retry-After", str(math.ceil(seconds)))], body
    if hint == "retry-after-date":
        return [("Retry-After", email.utils.formatdate(now + seconds, usegmt=True))], body
    if hint == "anthropic-unified":
        reset = str(math.ceil(now + seconds))
        headers = [
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-5h-status", "rejected"),
            ("anthropic-ratelimit-unified-5h-reset", reset),
            ("anthropic-ratelimit-unified-reset", reset),
            ("anthropic-ratelimit-unified-representative-claim", "five_hour"),
        ]
        return headers, error_payload(error, Dialect.ANTHROPIC, None)
    if hint in ("codex-resets-in", "codex-resets-at"):
        detail: dict[str, Any] = {
            "type": "usage_limit_reached",
            "code": "usage_limit_reached",
            "message": "The usage limit has been reached.",
            "param": None,
            "plan_type": "plus",
        }
        if hint == "codex-resets-in":
            detail["resets_in_seconds"] = math.ceil(seconds)
        else:
            detail["resets_at"] = math.ceil(now + seconds)
        return [], {"error": detail}
    if hint == "google-retry-info":
        gemini = error_payload(error, Dialect.GEMINI, None)
        gemini["error"]["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds:g}s"},
        ]
        return [], gemini
    return [], body


def render_error(error: ApiError | Status, dialect: Dialect, model: str | None) -> JsonReply:
    """Build the response for an error behavior on a route of `dialect`."""
    if isinstance(error, Status):
        return _render_status(error)

    body = error_payload(error, dialect, model)
    headers: list[tuple[str, str]] = []
    if error.kind == "rate_limited":
        headers, body = _hint_headers_and_body(error, body)
    return JsonReply(error.code, dumps(body), headers)


def _render_status(status: Status) -> JsonReply:
    headers = list(status.headers.items())
    has_content_type = any(name.lower() == "content-type" for name, _ in headers)
    if isinstance(status.body, dict):
        return JsonReply(status.code, dumps(status.body), headers, None if has_content_type else "application/json")
    return JsonReply(status.code, status.body or b"", headers, None)


def inband_error_frame(stream_kind: str, error: ApiError, model: str | None, index: int, eol: bytes) -> bytes:
    """Build the error event that a stream of `stream_kind` carries after its headers were sent.

    `index` is the number of frames written before it; Responses uses it as sequence_number.
    """
    if stream_kind == "anthropic":
        payload = error_payload(error, Dialect.ANTHROPIC, model)
        payload.pop("request_id", None)
        return sse_frame("error", dumps(payload), eol)
    if stream_kind == "responses":
        detail = error_payload(error, Dialect.OPENAI, model)["error"]
        failed = {
            "type": "response.failed",
            "sequence_number": index,
            "response": {
                "id": "resp_" + ID_PLACEHOLDER.decode(),
                "object": "response",
                "status": "failed",
                "model": model,
                "output": [],
                "error": {"code": detail["code"] or detail["type"], "message": detail["message"]},
                "usage": None,
            },
        }
        return sse_frame("response.failed", dumps(failed), eol)
    if stream_kind == "gemini":
        return sse_frame(None, dumps(error_payload(error, Dialect.GEMINI, model)), eol)
    return sse_frame(None, dumps(error_payload(error, Dialect.OPENAI, model)), eol)


def reject(dialect: Dialect, message: str, model: str | None = None, code: int = 400) -> JsonReply:
    """Build an `invalid_request` response with `message`, for a request the fake cannot serve."""
    return render_error(ApiError("invalid_request", code, message=message), dialect, model)
