"""Codex backend (ChatGPT accounts): POST .../backend-api/codex/responses.

It sends the Responses stream of `tests.fakes.responses` and always streams, whatever
the body's `stream` field is. Like the real backend it needs the `chatgpt-account-id` header.
Without it the response is a 401 with an OpenAI-shaped error body.
"""

from __future__ import annotations

from tests.fakes.behaviors import ApiError
from tests.fakes.core import Call, Reply
from tests.fakes.errors import render_error
from tests.fakes.responses import handle_responses


def handle_codex(call: Call) -> Reply:
    if not call.record.header("chatgpt-account-id"):
        error = ApiError("unauthorized", 401, message="Missing the chatgpt-account-id header.")
        return render_error(error, call.dialect, None)
    return handle_responses(call, always_stream=True)
