"""Cooldowns: when an account (or one model on it) may be used again after a failure.

State is kept per (account, model). An account-wide cooldown (a 401, or a provider signal that
the whole subscription window is used up) blocks every model of that account. A 429 without a
reset hint backs off exponentially, 1 s doubling up to 30 min. A new 429 while the previous
window is still open keeps that window instead of escalating, so a burst of parallel 429s counts
once. Success on a model clears its state.
"""

import threading
from dataclasses import dataclass
from enum import StrEnum

MAX_BACKOFF_SECONDS = 30 * 60


class FailureKind(StrEnum):
    """The kind of an upstream failure, which decides its cooldown and whether to rotate."""

    REQUEST_FAULT = "request_fault"  # the request itself is bad: no cooldown, no rotation
    UNAUTHORIZED = "unauthorized"  # 401
    FORBIDDEN = "forbidden"  # 402 / 403
    MODEL_NOT_FOUND = "model_not_found"  # 404 for this model
    RATE_LIMITED = "rate_limited"  # 429
    TRANSIENT = "transient"  # 408, 5xx, connect errors, timeouts, dropped connections


@dataclass(frozen=True)
class Failure:
    """A classified upstream failure.

    `cooldown` is in seconds; None means "back off exponentially" (a 429 without a hint) and
    0 means no cooldown. `rotate` is True when the request moves on to another account.
    """

    kind: FailureKind
    status: int
    reason: str
    cooldown: float | None = 0.0
    account_wide: bool = False
    rotate: bool = True

    @property
    def retry_round_eligible(self) -> bool:
        """Whether another round over the pool may follow (403, 408, 429 and 5xx)."""
        return self.kind in (FailureKind.RATE_LIMITED, FailureKind.TRANSIENT) or self.status == 403


@dataclass
class Cooldown:
    """One cooldown entry: blocked until `until` (epoch seconds) because of `reason`."""

    until: float
    reason: str
    status: int
    level: int = 0


class CooldownBook:
    """Cooldown entries keyed by (account id, model); model None means account-wide."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str | None], Cooldown] = {}
        self._lock = threading.Lock()

    def apply(self, account_id: str, model: str, failure: Failure, now: float) -> float:
        """Record `failure` and return the cooldown it set, in seconds (0 for none)."""
        if failure.cooldown == 0:
            return 0.0
        key = (account_id, None if failure.account_wide else model)
        with self._lock:
            previous = self._entries.get(key)
            if failure.cooldown is None:
                if previous is not None and previous.until > now:
                    return previous.until - now
                level = previous.level + 1 if previous is not None else 0
                seconds = min(float(2**level), MAX_BACKOFF_SECONDS)
            else:
                level = previous.level if previous is not None else 0
                seconds = float(failure.cooldown)
                if previous is not None and previous.until > now + seconds:
                    return previous.until - now
            self._entries[key] = Cooldown(
                until=now + seconds, reason=failure.reason, status=failure.status, level=level
            )
            return seconds

    def clear(self, account_id: str, model: str) -> None:
        """Forget the model's cooldown after a success; account-wide entries expire alone."""
        with self._lock:
            self._entries.pop((account_id, model), None)

    def clear_account(self, account_id: str) -> None:
        with self._lock:
            for key in [key for key in self._entries if key[0] == account_id]:
                del self._entries[key]

    def blocking(self, account_id: str, model: str, now: float) -> Cooldown | None:
        """Return the cooldown that blocks `model` on the account now, if any."""
        with self._lock:
            account_wide = self._entries.get((account_id, None))
            per_model = self._entries.get((account_id, model))
        active = [c for c in (account_wide, per_model) if c is not None and c.until > now]
        if not active:
            return None
        return max(active, key=lambda cooldown: cooldown.until)

    def account_cooldowns(self, account_id: str, now: float) -> list[tuple[str | None, Cooldown]]:
        """Return the active cooldowns of one account, as (model or None, cooldown) pairs."""
        with self._lock:
            items = [
                (key[1], cooldown)
                for key, cooldown in self._entries.items()
                if key[0] == account_id and cooldown.until > now
            ]
        return sorted(items, key=lambda item: item[1].until)

    def retain(self, account_ids: set[str]) -> None:
        """Drop entries of accounts that left the pool."""
        with self._lock:
            for key in [key for key in self._entries if key[0] not in account_ids]:
                del self._entries[key]
