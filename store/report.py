"""Plain-text usage tables for the `cliproxy usage` command."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from config import Config

PERIOD_TITLES = {"day": "Today", "month": "This month"}
USAGE_DATABASE_NAME = "usage.db"
REPORT_GROUPS = ("key", "model", "account")


def usage_database_path(config_directory: str | Path) -> Path:
    """Return the path of the usage database in a config directory."""
    return Path(config_directory) / USAGE_DATABASE_NAME


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Request and token sums of one group (key, model, account) over one period.

    `input_tokens` counts all prompt tokens, cache reads (`cached_tokens`) and cache writes
    included. `usage_unknown` counts requests whose response reported no usage, which add
    no tokens. A group column is "" when the totals are not grouped by it.
    """

    period: str
    key: str
    model: str
    account: str
    requests: int
    failed: int
    usage_unknown: int
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    total_tokens: int


_GROUP_HEADERS = (("key", "KEY"), ("model", "MODEL"), ("account", "ACCOUNT"))
_COUNT_HEADERS = (
    ("requests", "REQUESTS"),
    ("failed", "FAILED"),
    ("input_tokens", "INPUT"),
    ("cached_tokens", "CACHED"),
    ("output_tokens", "OUTPUT"),
    ("total_tokens", "TOTAL"),
    ("usage_unknown", "NO USAGE"),
)


def format_usage_table(
    rows: Iterable[UsageTotals], periods: Sequence[str] = ("day", "month")
) -> str:
    """Render one table per period, with a TOTAL line, as aligned plain text.

    Group columns appear only when some row of the period has a value for them.
    """
    rows = list(rows)
    sections = []
    for period in periods:
        period_rows = [row for row in rows if row.period == period]
        title = PERIOD_TITLES.get(period, period)
        if not period_rows:
            sections.append(f"{title}: no requests")
            continue
        sections.append(f"{title}\n{_format_table(period_rows)}")
    return "\n\n".join(sections) + "\n"


def _format_table(rows: list[UsageTotals]) -> str:
    group_columns = [
        (attribute, header)
        for attribute, header in _GROUP_HEADERS
        if any(getattr(row, attribute) for row in rows)
    ]
    header = [title for _, title in group_columns] + [title for _, title in _COUNT_HEADERS]

    lines = []
    for row in rows:
        lines.append(
            [str(getattr(row, attribute)) for attribute, _ in group_columns]
            + [f"{getattr(row, attribute):,}" for attribute, _ in _COUNT_HEADERS]
        )
    total_line = [""] * len(group_columns) + [
        f"{sum(getattr(row, attribute) for row in rows):,}" for attribute, _ in _COUNT_HEADERS
    ]
    if group_columns:
        total_line[0] = "TOTAL"
        lines.append(total_line)

    widths = [max(len(line[index]) for line in [header, *lines]) for index in range(len(header))]
    group_count = len(group_columns)

    def render(cells: list[str]) -> str:
        rendered = [
            cell.ljust(width) if index < group_count else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(rendered).rstrip()

    return "\n".join(render(line) for line in [header, *lines])


def period_start(period: str, now: float) -> float:
    """Return the epoch time of the start of the local day ("day") or month ("month")."""
    start = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    elif period != "day":
        raise ValueError(f"invalid period {period!r}: expected 'day' or 'month'")
    return start.timestamp()


def print_usage_report(
    config: Config, *, now: float | None = None, out: TextIO | None = None
) -> int:
    """Print today's and this month's totals per key, model and account; return the exit code.

    The database is opened read-only, so this works while the proxy is running and never
    creates a database. Returns 1 when the database cannot be read.
    """
    from store.statistics import query_totals

    out = out if out is not None else sys.stdout
    path = usage_database_path(config.directory)
    if not path.exists():
        print(f"No usage recorded yet: {path} does not exist.", file=out)
        return 0
    moment = now if now is not None else time.time()
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            rows = [
                row
                for period in PERIOD_TITLES
                for row in query_totals(connection, period, period_start(period, moment), REPORT_GROUPS)
            ]
        finally:
            connection.close()
    except sqlite3.Error as error:
        print(f"cliproxy: reading the usage database {path} failed: {error}", file=sys.stderr)
        return 1
    print(format_usage_table(rows), end="", file=out)
    return 0
