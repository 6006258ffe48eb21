"""`/logs` (application log lines) and `/request-error-logs` (failed-request log files)."""

from __future__ import annotations

import logging
import stat

from mgmt.context import MgmtContext
from mgmt.router import HttpError, MgmtRequest, MgmtResponse, Router

logger = logging.getLogger(__name__)

# Lines returned by one `GET /logs` when the client gives no `limit`.
DEFAULT_LOG_LIMIT = 2000
ERROR_LOG_PREFIX = "error-"
ERROR_LOG_SUFFIX = ".log"


def _int_query(request: MgmtRequest, name: str, default: int) -> int:
    raw = request.query_value(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"invalid {name}: {raw!r} is not a whole number") from None
    if value < 0:
        raise HttpError(400, f"invalid {name}: {value} is negative")
    return value


def get_logs(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Return `{"lines", "line-count", "latest-timestamp"}` for lines newer than `?after=`."""
    after = _int_query(request, "after", 0)
    limit = _int_query(request, "limit", DEFAULT_LOG_LIMIT)
    if ctx.logs is None:
        return MgmtResponse(200, {"lines": [], "line-count": 0, "latest-timestamp": after})
    page = ctx.logs.lines_after(after, limit)
    lines = [str(line) for line in page.get("lines", [])]
    return MgmtResponse(
        200,
        {
            "lines": lines,
            "line-count": int(page.get("line-count", len(lines))),
            "latest-timestamp": int(page.get("latest-timestamp", after)),
        },
    )


def clear_logs(ctx: MgmtContext, _request: MgmtRequest) -> MgmtResponse:
    """Drop the kept application log lines."""
    removed = ctx.logs.clear() if ctx.logs is not None else 0
    logger.info("management API: cleared %d log lines", removed)
    return MgmtResponse(
        200, {"success": True, "message": "Logs cleared successfully", "removed": removed}
    )


def list_error_logs(ctx: MgmtContext, _request: MgmtRequest) -> MgmtResponse:
    """Return `{"files": [{"name", "size", "modified"}]}` of `error-*.log`, newest first."""
    files = []
    try:
        entries = list(ctx.logs_dir().iterdir())
    except FileNotFoundError:
        entries = []
    for path in entries:
        if not (path.name.startswith(ERROR_LOG_PREFIX) and path.name.endswith(ERROR_LOG_SUFFIX)):
            continue
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode):
            files.append({"name": path.name, "size": info.st_size, "modified": int(info.st_mtime)})
    files.sort(key=lambda item: item["modified"], reverse=True)
    return MgmtResponse(200, {"files": files})


def download_error_log(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Return one `error-*.log` file named by the last path segment."""
    name = request.path.rsplit("/", 1)[-1]
    if (
        not name.startswith(ERROR_LOG_PREFIX)
        or not name.endswith(ERROR_LOG_SUFFIX)
        or ".." in name
        or "\\" in name
    ):
        raise HttpError(400, "invalid name")
    path = ctx.logs_dir() / name
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            raise FileNotFoundError(name)
        data = path.read_bytes()
    except FileNotFoundError:
        raise HttpError(404, "file not found") from None
    return MgmtResponse(
        200,
        body=data,
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )


def register(router: Router, ctx: MgmtContext) -> None:
    """Add the log routes to `router`."""
    router.add("GET", "/logs", lambda request: get_logs(ctx, request))
    router.add("DELETE", "/logs", lambda request: clear_logs(ctx, request))
    router.add("GET", "/request-error-logs", lambda request: list_error_logs(ctx, request))
    router.add_prefix(
        "GET", "/request-error-logs/", lambda request: download_error_log(ctx, request)
    )
