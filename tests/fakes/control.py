"""HTTP control API of the fake upstream, for runs where it is a separate process.

Paths (JSON in and out; `account` may be "" for the unprefixed paths):
- GET  /_fake/health                 -> {"status": "ok", "port": N}
- GET  /_fake/requests[?account=A]   -> {"requests": [record, ...]}, bodies as decoded JSON only
- GET  /_fake/count[?account=A]      -> {"count": N}
- GET  /_fake/events?seq=N           -> {"times": [monotonic seconds, ...]}
- POST /_fake/clear                  -> drop recordings
- POST /_fake/reset                  -> drop recordings and scripted behaviors
- POST /_fake/enqueue  {"account": "A", "behaviors": [spec, ...]}
- POST /_fake/default  {"account": "A", "behavior": spec or null}
A behavior spec is described in `tests.fakes.behaviors.behavior_from_spec`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from tests.fakes.behaviors import behavior_from_spec
from tests.fakes.core import JsonReply, json_reply
from tests.fakes.recording import RecordedRequest

if TYPE_CHECKING:
    from tests.fakes.server import FakeUpstream


def _record_json(record: RecordedRequest) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "account": record.account,
        "method": record.method,
        "path": record.path,
        "raw_path": record.raw_path,
        "query": record.query,
        "headers": record.headers,
        "body_size": len(record.body),
        "json": record.json,
        "status": record.status,
        "client_disconnected": record.client_disconnected,
        "received_at": record.received_at,
    }


def _error(status: int, message: str) -> JsonReply:
    return json_reply(status, {"error": {"message": message}})


def handle_control(upstream: FakeUpstream, method: str, path: str, query_string: str, body: bytes) -> JsonReply:
    """Handle one control API request and return its response."""
    query = {name: values[-1] for name, values in parse_qs(query_string, keep_blank_values=True).items()}
    account = query.get("account")
    action = path.removeprefix("/_fake/")

    if method == "GET":
        if action == "health":
            return json_reply(200, {"status": "ok", "port": upstream.port})
        if action == "requests":
            return json_reply(200, {"requests": [_record_json(r) for r in upstream.requests(account)]})
        if action == "count":
            return json_reply(200, {"count": upstream.count(account)})
        if action == "events":
            try:
                seq = int(query["seq"])
            except (KeyError, ValueError):
                return _error(400, "GET /_fake/events needs an integer ?seq= parameter.")
            return json_reply(200, {"times": upstream.event_times(seq)})
        return _error(404, f"Unknown control path GET {path}.")

    if method != "POST":
        return _error(405, f"Control paths accept GET and POST, not {method}.")
    if action == "clear":
        upstream.clear()
        return json_reply(200, {"ok": True})
    if action == "reset":
        upstream.reset()
        return json_reply(200, {"ok": True})
    if action not in ("enqueue", "default"):
        return _error(404, f"Unknown control path POST {path}.")

    try:
        payload = json.loads(body or b"{}")
        if not isinstance(payload, dict) or not isinstance(payload.get("account"), str):
            raise ValueError('the body must be a JSON object with a string "account"')
        if action == "enqueue":
            specs = payload.get("behaviors")
            if not isinstance(specs, list):
                raise ValueError('"behaviors" must be a list of behavior specs')
            upstream.enqueue(payload["account"], *(behavior_from_spec(spec) for spec in specs))
        else:
            spec = payload.get("behavior")
            upstream.set_default(payload["account"], None if spec is None else behavior_from_spec(spec))
    except ValueError as exc:
        return _error(400, f"Invalid {action} request: {exc}")
    return json_reply(200, {"ok": True})
