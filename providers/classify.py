"""Classifying upstream error responses into failures with cooldowns.

Request faults (400, 409, 413, 422, or a body that marks the request as invalid) go straight
back to the client: the next account would reject the same request. Everything else cools the
account (or one model on it) and moves the request on:

| response | scope | cooldown |
|---|---|---|
| 401 | account | 30 min (an OAuth account refreshes its token first) |
| 402, 403 | account | 30 min |
| 404, or 400/422 "model not supported" | model | 1 h |
| 429 | model, or account for a whole-subscription window | the provider's reset hint, else 1 s doubling to 30 min |
| 408, 5xx, connect errors, dropped connections | model | 5 s |

Reset hints read: `Retry-After` (seconds or HTTP date), Anthropic's
`anthropic-ratelimit-unified-*-reset` for rejected windows, Codex `error.resets_at` /
`error.resets_in_seconds`, and Google's `RetryInfo.retryDelay` / `quotaResetDelay`.
"""

import json
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from pool.cooldown import Failure, FailureKind

AUTH_COOLDOWN = 30 * 60.0
MODEL_NOT_FOUND_COOLDOWN = 60 * 60.0
TRANSIENT_COOLDOWN = 5.0

_REQUEST_FAULT_STATUSES = {400, 409, 413, 422}
_REQUEST_FAULT_CODES = {
    "context_length_exceeded",
    "invalid_prompt",
    "invalid_value",
    "unsupported_value",
    "invalid_request_error",
    "previous_response_not_found",
    "message_too_big",
    "string_above_max_length",
}
_REQUEST_FAULT_TYPES = {
    "invalid_request_error",
    "invalid_request",
    "bad_request_error",
    "invalid_prompt",
    "request_too_large",
}
_MODEL_UNSUPPORTED_PHRASES = (
    "model not supported",
    "unsupported model",
    "not available for your plan",
    "model_not_found",
    "does not exist",
)


def classify(status: int, headers: Mapping[str, str], body: bytes, now: float | None = None) -> Failure:
    """Classify an upstream error response (status >= 400); `body` must be decoded already."""
    now = time.time() if now is None else now
    error = _error_fields(body)
    message = error.get("message") or ""
    lowered = f"{message} {error.get('code') or ''} {error.get('type') or ''}".lower()

    if status == 429:
        return _rate_limited(headers, error, now)
    if status == 401:
        return Failure(FailureKind.UNAUTHORIZED, 401, _reason(status, message), AUTH_COOLDOWN, True)
    if status in (402, 403):
        return Failure(FailureKind.FORBIDDEN, status, _reason(status, message), AUTH_COOLDOWN, True)
    if status in (400, 422) and any(phrase in lowered for phrase in _MODEL_UNSUPPORTED_PHRASES):
        return Failure(
            FailureKind.MODEL_NOT_FOUND, status, _reason(status, message), MODEL_NOT_FOUND_COOLDOWN
        )
    if status in _REQUEST_FAULT_STATUSES or _is_request_fault_body(error):
        return Failure(
            FailureKind.REQUEST_FAULT, status, _reason(status, message), 0.0, rotate=False
        )
    if status == 404:
        return Failure(
            FailureKind.MODEL_NOT_FOUND, 404, _reason(status, message), MODEL_NOT_FOUND_COOLDOWN
        )
    return Failure(FailureKind.TRANSIENT, status, _reason(status, message), TRANSIENT_COOLDOWN)


def connection_failure(description: str, status: int = 502) -> Failure:
    """Return the failure for a connect error, timeout or dropped upstream connection."""
    return Failure(FailureKind.TRANSIENT, status, description, TRANSIENT_COOLDOWN)


def _reason(status: int, message: str) -> str:
    message = " ".join(message.split())
    if len(message) > 160:
        message = message[:157] + "..."
    return f"upstream returned {status}" + (f": {message}" if message else "")


def _error_fields(body: bytes) -> dict[str, Any]:
    """Extract type, code, message and the raw error object from a JSON error body."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body[:300].decode("utf-8", "replace").strip()
        return {"message": text}
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Google APIs sometimes wrap the error in a list
    if not isinstance(data, dict):
        return {}
    error = data.get("error")
    if isinstance(error, dict):
        return {
            "type": error.get("type") or error.get("status"),
            "code": error.get("code") if isinstance(error.get("code"), str) else None,
            "message": str(error.get("message") or ""),
            "raw": error,
        }
    if isinstance(error, str):
        return {"message": error, "raw": data}
    return {"message": str(data.get("message") or ""), "raw": data}


def _is_request_fault_body(error: dict[str, Any]) -> bool:
    return error.get("code") in _REQUEST_FAULT_CODES or error.get("type") in _REQUEST_FAULT_TYPES


def _rate_limited(headers: Mapping[str, str], error: dict[str, Any], now: float) -> Failure:
    message = error.get("message") or ""

    unified = _anthropic_unified_reset(headers, now)
    if unified is not None:
        return Failure(
            FailureKind.RATE_LIMITED,
            429,
            _reason(429, message or "subscription window exhausted"),
            unified,
            account_wide=True,
        )

    for hint in (
        _retry_after(headers, now),
        _codex_reset(error.get("raw") or {}, now),
        _google_retry_delay(error.get("raw") or {}),
    ):
        if hint is not None:
            return Failure(FailureKind.RATE_LIMITED, 429, _reason(429, message), max(hint, 1.0))
    return Failure(FailureKind.RATE_LIMITED, 429, _reason(429, message), None)


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - now, 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _anthropic_unified_reset(headers: Mapping[str, str], now: float) -> float | None:
    """Return seconds until the latest rejected Anthropic subscription window resets."""
    deadlines = []
    for window in ("", "-5h", "-7d", "-7d_oi"):
        status = headers.get(f"anthropic-ratelimit-unified{window}-status", "")
        if status.lower() != "rejected":
            continue
        reset = headers.get(f"anthropic-ratelimit-unified{window}-reset")
        if reset:
            parsed = _parse_epoch_or_date(reset)
            if parsed is not None:
                deadlines.append(parsed)
    if not deadlines:
        return None
    return max(max(deadlines) - now, 1.0)


def _parse_epoch_or_date(value: str) -> float | None:
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        from datetime import datetime

        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _codex_reset(error: dict[str, Any], now: float) -> float | None:
    seconds = error.get("resets_in_seconds")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        return float(seconds)
    resets_at = error.get("resets_at")
    if isinstance(resets_at, (int, float)) and not isinstance(resets_at, bool):
        return max(float(resets_at) - now, 0.0)
    return None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _google_retry_delay(error: dict[str, Any]) -> float | None:
    details = error.get("details")
    if not isinstance(details, list):
        return None
    for detail in details:
        if not isinstance(detail, dict):
            continue
        delay = detail.get("retryDelay")
        if delay is None and isinstance(detail.get("metadata"), dict):
            delay = detail["metadata"].get("quotaResetDelay")
        if isinstance(delay, str):
            match = _DURATION.match(delay)
            if match:
                return float(match.group(1))
    return None
