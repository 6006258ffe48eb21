"""Responses that cliproxy sends itself: JSON bodies and errors in the client's dialect."""

import json
import math
from typing import Any

from mitmproxy import http

from providers.dialects import Dialect, error_body

JSON_HEADERS = {"content-type": "application/json"}


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> http.Response:
    body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    return http.Response.make(status, body, {**JSON_HEADERS, **(headers or {})})


def error_response(
    dialect: Dialect,
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> http.Response:
    """Build an error in the client's dialect; a 429 always carries `Retry-After`."""
    headers = dict(JSON_HEADERS)
    if status == 429:
        headers["retry-after"] = str(max(1, math.ceil(retry_after or 1)))
    return http.Response.make(status, error_body(dialect, status, message, code, param), headers)
