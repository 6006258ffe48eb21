"""Time helpers shared by the OAuth modules: an injectable clock and RFC 3339 formatting.

Every module that compares against "now" takes a `Clock` argument so tests can move time
without sleeping. Times are timezone-aware and in UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def format_rfc3339(moment: datetime) -> str:
    """Format `moment` as RFC 3339 in UTC with second precision, e.g. `2026-05-01T12:00:00Z`."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def format_rfc3339_nano(moment: datetime) -> str:
    """Format `moment` as RFC 3339 in UTC with nine fractional digits, as Go's RFC3339Nano does."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}000Z"
