"""Statistics queries over the usage database: the legacy snapshot, its import and totals.

The snapshot has the shape of CLIProxyAPI's in-process statistics (v6.9 and earlier), which
`GET /usage`, `GET /usage/export` and Quotio decode:

    {"total_requests", "success_count", "failure_count", "total_tokens",
     "input_tokens", "output_tokens",
     "apis": {<key label>: {"total_requests", "total_tokens",
              "models": {<model>: {"total_requests", "total_tokens", "details": [...]}}}},
     "requests_by_day": {"YYYY-MM-DD": n}, "requests_by_hour": {"00".."23": n},
     "tokens_by_day", "tokens_by_hour"}

Days and hours are local time. Every number is an int.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from store.records import format_rfc3339, parse_rfc3339
from store.report import UsageTotals
from store.usage_db import (
    ACCOUNT_SQL,
    API_SQL,
    INSERT_SQL,
    MODEL_SQL,
    legacy_identity,
)

GROUP_COLUMNS = {"key": API_SQL, "model": MODEL_SQL, "account": ACCOUNT_SQL}

_TIME_FILTER = "ts >= :since"


def empty_snapshot() -> dict[str, Any]:
    return {
        "total_requests": 0,
        "success_count": 0,
        "failure_count": 0,
        "total_tokens": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "apis": {},
        "requests_by_day": {},
        "requests_by_hour": {},
        "tokens_by_day": {},
        "tokens_by_hour": {},
    }


def build_snapshot(
    connection: sqlite3.Connection,
    since: float | None,
    details_limit: int | None,
    include_request_ids: bool = False,
) -> dict[str, Any]:
    """Aggregate the rows with `ts >= since` (all rows when None) into a snapshot.

    `details` lists the newest `details_limit` requests of each model, oldest first (all
    when None). `include_request_ids` adds `request_id` to each detail, which lets an
    import of the snapshot recognize requests it already has. Call it inside
    `usage_db.read_transaction`, so that its three queries see the same rows.
    """
    parameters = {"since": since if since is not None else float("-inf")}
    snapshot = empty_snapshot()
    apis: dict[str, Any] = snapshot["apis"]

    group_rows = connection.execute(
        f"SELECT {API_SQL} AS api, {MODEL_SQL} AS model, COUNT(*), SUM(failed), "
        f"SUM(total_tokens), SUM(input_tokens), SUM(output_tokens) "
        f"FROM requests WHERE {_TIME_FILTER} GROUP BY api, model ORDER BY api, model",
        parameters,
    )
    for api, model, requests, failed, total, input_tokens, output_tokens in group_rows:
        snapshot["total_requests"] += requests
        snapshot["failure_count"] += failed
        snapshot["total_tokens"] += total
        snapshot["input_tokens"] += input_tokens
        snapshot["output_tokens"] += output_tokens

        api_entry = apis.setdefault(api, {"total_requests": 0, "total_tokens": 0, "models": {}})
        api_entry["total_requests"] += requests
        api_entry["total_tokens"] += total
        api_entry["models"][model] = {
            "total_requests": requests,
            "total_tokens": total,
            "details": [],
        }
    snapshot["success_count"] = snapshot["total_requests"] - snapshot["failure_count"]

    time_rows = connection.execute(
        "SELECT strftime('%Y-%m-%d', ts, 'unixepoch', 'localtime') AS day, "
        "strftime('%H', ts, 'unixepoch', 'localtime') AS hour, COUNT(*), SUM(total_tokens) "
        f"FROM requests WHERE {_TIME_FILTER} GROUP BY day, hour ORDER BY day, hour",
        parameters,
    )
    for day, hour, requests, total in time_rows:
        for bucket, key in (("by_day", day), ("by_hour", hour)):
            counts = snapshot["requests_" + bucket]
            tokens = snapshot["tokens_" + bucket]
            counts[key] = counts.get(key, 0) + requests
            tokens[key] = tokens.get(key, 0) + total

    for api, model, detail in _details(connection, parameters, details_limit, include_request_ids):
        apis[api]["models"][model]["details"].append(detail)
    return snapshot


def _details(
    connection: sqlite3.Connection,
    parameters: dict[str, Any],
    limit: int | None,
    include_request_ids: bool,
) -> Iterable[tuple[str, str, dict[str, Any]]]:
    rank_filter = "WHERE rank <= :limit" if limit is not None else ""
    rows = connection.execute(
        "SELECT api, model, ts, latency_ms, account, auth_index, input_tokens, output_tokens, "
        "reasoning_tokens, cache_read_tokens, total_tokens, failed, request_id FROM ("
        f"  SELECT *, {API_SQL} AS api, {MODEL_SQL} AS model, ROW_NUMBER() OVER ("
        f"    PARTITION BY {API_SQL}, {MODEL_SQL} ORDER BY ts DESC, id DESC) AS rank"
        f"  FROM requests WHERE {_TIME_FILTER}"
        f") {rank_filter} ORDER BY api, model, ts, id",
        {**parameters, "limit": limit},
    )
    for row in rows:
        (api, model, ts, latency_ms, account, auth_index, input_tokens, output_tokens,
         reasoning_tokens, cached_tokens, total_tokens, failed, request_id) = row
        detail: dict[str, Any] = {
            "timestamp": format_rfc3339(ts),
            "latency_ms": round(latency_ms),
            "source": account,
            "auth_index": auth_index,
            "tokens": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "reasoning_tokens": reasoning_tokens,
                "cached_tokens": cached_tokens,
                "total_tokens": total_tokens,
            },
            "failed": bool(failed),
        }
        if include_request_ids and request_id:
            detail["request_id"] = request_id
        yield api, model, detail


@dataclass(frozen=True, slots=True)
class ImportResult:
    added: int
    skipped: int


class InvalidSnapshotError(ValueError):
    """An imported statistics document has an unsupported version or shape."""


def _int_field(data: dict[str, Any], name: str) -> int:
    value = data.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, int(value))


def import_rows(data: dict[str, Any], oldest_kept: float | None) -> tuple[list[dict], int]:
    """Convert the details of an export (`{"version": 0|1, "usage": snapshot}`) to rows.

    Returns the rows and the number of details skipped because they are older than
    `oldest_kept` or lack a valid timestamp. Raises InvalidSnapshotError for an unsupported
    version or a document that is not a snapshot.
    """
    if not isinstance(data, dict):
        raise InvalidSnapshotError("invalid json: expected an object with a usage snapshot")
    version = data.get("version", 0)
    if version not in (0, 1):
        raise InvalidSnapshotError(f"unsupported version {version!r}: expected 0 or 1")
    usage = data.get("usage")
    if not isinstance(usage, dict):
        raise InvalidSnapshotError("invalid json: missing object field 'usage'")
    apis = usage.get("apis") or {}
    if not isinstance(apis, dict):
        raise InvalidSnapshotError("invalid json: 'usage.apis' must be an object")

    rows: list[dict[str, Any]] = []
    skipped = 0
    for api, api_entry in apis.items():
        models = api_entry.get("models") if isinstance(api_entry, dict) else None
        for model, model_entry in (models or {}).items():
            details = model_entry.get("details") if isinstance(model_entry, dict) else None
            for detail in details or ():
                row = _detail_row(str(api), str(model), detail)
                if row is None or (oldest_kept is not None and row["ts"] < oldest_kept):
                    skipped += 1
                    continue
                rows.append(row)
    return rows, skipped


def _detail_row(api: str, model: str, detail: Any) -> dict[str, Any] | None:
    if not isinstance(detail, dict):
        return None
    try:
        timestamp = parse_rfc3339(str(detail.get("timestamp", "")))
    except ValueError:
        return None
    tokens = detail.get("tokens") if isinstance(detail.get("tokens"), dict) else {}
    failed = bool(detail.get("failed", False))
    source = str(detail.get("source") or "")
    auth_index = str(detail.get("auth_index") or "")
    request_id = str(detail.get("request_id") or "")
    token_counts = (
        _int_field(tokens, "input_tokens"),
        _int_field(tokens, "output_tokens"),
        _int_field(tokens, "reasoning_tokens"),
        _int_field(tokens, "cached_tokens"),
        _int_field(tokens, "total_tokens"),
    )
    if request_id:
        identity = "rid:" + request_id
    else:
        identity = legacy_identity(api, model, timestamp, source, auth_index, failed, token_counts)

    return {
        "identity": identity,
        "request_id": request_id,
        "ts": timestamp,
        "route": "",
        "dialect": "",
        "key_label": api,
        "requested_model": model,
        "upstream_model": "",
        "provider": "",
        "account": source,
        "auth_index": auth_index,
        "status": 0,
        "outcome": "upstream_error" if failed else "success",
        "failed": int(failed),
        "latency_ms": float(_int_field(detail, "latency_ms")),
        "ttfb_ms": None,
        "bytes_in": 0,
        "bytes_out": 0,
        "stream": 0,
        "usage_known": 1,
        "input_tokens": token_counts[0],
        "output_tokens": token_counts[1],
        "reasoning_tokens": token_counts[2],
        "cache_read_tokens": token_counts[3],
        "cache_write_tokens": 0,
        "total_tokens": token_counts[4],
        "attempts": "[]",
    }


def insert_rows(connection: sqlite3.Connection, rows: list[dict[str, Any]]) -> int:
    """Insert rows whose identity is new in one transaction. Returns how many were added."""
    with connection:
        before = connection.total_changes
        connection.executemany(INSERT_SQL, rows)
        return connection.total_changes - before


def query_totals(
    connection: sqlite3.Connection, period: str, since: float, group_by: tuple[str, ...]
) -> list[UsageTotals]:
    """Sum requests and tokens since `since`, one row per combination of `group_by` values."""
    unknown = [name for name in group_by if name not in GROUP_COLUMNS]
    if unknown:
        raise ValueError(f"invalid group_by {unknown}: expected names from {list(GROUP_COLUMNS)}")
    names = list(dict.fromkeys(group_by))
    selected = [f"{GROUP_COLUMNS[name]} AS {name}" for name in names]
    grouping = f"GROUP BY {', '.join(names)} ORDER BY {', '.join(names)}" if names else ""

    sums = [
        "COUNT(*)",
        "SUM(failed)",
        "SUM(1 - usage_known)",
        "SUM(input_tokens)",
        "SUM(cache_read_tokens)",
        "SUM(cache_write_tokens)",
        "SUM(output_tokens)",
        "SUM(reasoning_tokens)",
        "SUM(total_tokens)",
    ]
    rows = connection.execute(
        f"SELECT {', '.join(selected + sums)} FROM requests WHERE ts >= :since {grouping}",
        {"since": since},
    ).fetchall()

    totals = []
    for row in rows:
        groups = dict(zip(names, row[: len(names)], strict=True))
        counts = [value or 0 for value in row[len(names) :]]
        if counts[0] == 0:
            continue
        totals.append(
            UsageTotals(
                period=period,
                key=groups.get("key", ""),
                model=groups.get("model", ""),
                account=groups.get("account", ""),
                requests=counts[0],
                failed=counts[1],
                usage_unknown=counts[2],
                input_tokens=counts[3],
                cached_tokens=counts[4],
                cache_write_tokens=counts[5],
                output_tokens=counts[6],
                reasoning_tokens=counts[7],
                total_tokens=counts[8],
            )
        )
    return totals
