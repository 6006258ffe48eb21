"""`/usage`: aggregate request and token counts in CLIProxyAPI v6's snapshot shape.

The numbers come from `MgmtContext.usage`. A proxy without a usage store returns zeros in
the same shape. When the store fails, the route returns 404, which Quotio reads as
"statistics unavailable" instead of counting a failed refresh (three of those in a row make
it restart the proxy).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mgmt.context import MgmtContext, empty_usage_snapshot
from mgmt.router import HttpError, MgmtRequest, MgmtResponse, Router

logger = logging.getLogger(__name__)

_COUNTERS = (
    "total_requests",
    "success_count",
    "failure_count",
    "total_tokens",
    "input_tokens",
    "output_tokens",
)


def usage_payload(aggregate: Mapping[str, Any]) -> dict[str, Any]:
    """Return `{"usage": snapshot, "failed_requests": n}` with every counter an int."""
    usage = empty_usage_snapshot()
    snapshot = aggregate.get("usage")
    if isinstance(snapshot, Mapping):
        usage.update(snapshot)
    for key in _COUNTERS:
        value = usage.get(key)
        usage[key] = value if isinstance(value, int) and not isinstance(value, bool) else 0
    failed = aggregate.get("failed_requests")
    if isinstance(failed, bool) or not isinstance(failed, int):
        failed = usage["failure_count"]
    return {"usage": usage, "failed_requests": failed}


def get_usage(ctx: MgmtContext, _request: MgmtRequest) -> MgmtResponse:
    try:
        aggregate = ctx.usage.aggregate()
    except Exception as exc:  # the store's errors differ by backend; none may become a 5xx
        logger.error("management API: reading usage statistics failed: %s", exc)
        raise HttpError(404, f"usage statistics unavailable: {exc}") from None
    return MgmtResponse(200, usage_payload(aggregate))


def export_usage(ctx: MgmtContext, _request: MgmtRequest) -> MgmtResponse:
    """Return every kept record as `{"version": 1, "exported_at", "usage"}`."""
    export = getattr(ctx.usage, "export", None)
    if export is None:
        raise HttpError(404, "usage statistics unavailable")
    return MgmtResponse(200, export())


def import_usage(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Merge an export; returns `{"added", "skipped", "total_requests", "failed_requests"}`."""
    merge = getattr(ctx.usage, "import_", None)
    if merge is None:
        raise HttpError(400, "usage statistics unavailable")
    body = request.json()
    if not isinstance(body, dict):
        raise HttpError(400, "invalid json")
    try:
        result = merge(body)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    return MgmtResponse(200, result)


def usage_queue(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Pop up to `count` per-request records (default 1), oldest first, as a JSON array."""
    pop = getattr(ctx.usage, "queue_pop", None)
    if pop is None:
        raise HttpError(404, "usage statistics unavailable")
    raw = request.query_value("count") or "1"
    if not raw.isdigit() or int(raw) <= 0:
        raise HttpError(400, "count must be a positive integer")
    return MgmtResponse(200, pop(int(raw)))


def register(router: Router, ctx: MgmtContext) -> None:
    """Add the usage routes to `router`."""
    router.add("GET", "/usage", lambda request: get_usage(ctx, request))
    router.add("GET", "/usage/export", lambda request: export_usage(ctx, request))
    router.add("POST", "/usage/import", lambda request: import_usage(ctx, request))
    router.add("GET", "/usage-queue", lambda request: usage_queue(ctx, request))
