"""The account pool: which account serves the next request for a model.

Selection walks the accounts that serve the model (enabled, not in error, upstream kind
accepted by the route), skips those already tried for this request and those cooling down,
keeps only the highest `priority` tier that has a ready account, then applies the strategy:
`round-robin` advances a cursor per (route kinds, model); `fill-first` takes the first ready
account in pool order (config entries in file order, then auth files by name).
"""

import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

from pool.account import Account, Family, UpstreamKind
from pool.cooldown import Cooldown, CooldownBook, Failure


class AccountState(StrEnum):
    READY = "ready"
    COOLING = "cooling"
    ERROR = "error"
    DISABLED = "disabled"


@dataclass(frozen=True)
class AccountStatus:
    """The live state of one account, as the management API and metrics show it."""

    state: AccountState
    message: str = ""
    until: float | None = None


@dataclass(frozen=True)
class Picked:
    account: Account
    upstream_model: str


@dataclass(frozen=True)
class AllCooling:
    """Every untried account for the model is cooling; the earliest recovers in `retry_after`."""

    retry_after: float
    reason: str


@dataclass(frozen=True)
class Exhausted:
    """Every account for the model was already tried for this request."""


@dataclass(frozen=True)
class NotServed:
    """No enabled account with an accepted upstream kind serves the model."""


PickResult = Picked | AllCooling | Exhausted | NotServed


class AccountPool:
    """Accounts, their cooldowns and error states, and the selection strategy."""

    def __init__(self, strategy: str = "round-robin") -> None:
        self.strategy = strategy
        self.cooldowns = CooldownBook()
        self._accounts: list[Account] = []
        self._by_id: dict[str, Account] = {}
        self._errors: dict[str, str] = {}
        self._cursors: dict[tuple[frozenset[UpstreamKind], str], int] = {}
        self._lock = threading.Lock()

    def set_accounts(self, accounts: Iterable[Account]) -> None:
        """Replace the account list; cooldowns of accounts that stay are kept."""
        accounts = list(accounts)
        with self._lock:
            self._accounts = accounts
            self._by_id = {account.id: account for account in accounts}
            for account_id in [key for key in self._errors if key not in self._by_id]:
                del self._errors[account_id]
        self.cooldowns.retain(set(self._by_id))

    def accounts(self) -> list[Account]:
        with self._lock:
            return list(self._accounts)

    def get(self, account_id: str) -> Account | None:
        with self._lock:
            return self._by_id.get(account_id)

    def set_error(self, account_id: str, message: str) -> None:
        """Mark an account unusable (e.g. its refresh token was rejected) until reloaded."""
        with self._lock:
            self._errors[account_id] = message

    def clear_error(self, account_id: str) -> None:
        with self._lock:
            self._errors.pop(account_id, None)

    def serving(self, kinds: Collection[UpstreamKind], model: str) -> list[tuple[Account, str]]:
        """Return the usable accounts of the given kinds that serve `model`, in pool order."""
        with self._lock:
            accounts = self._accounts
            errors = self._errors
            result = []
            for account in accounts:
                if account.disabled or account.id in errors or account.kind not in kinds:
                    continue
                upstream = account.upstream_model(model)
                if upstream is not None:
                    result.append((account, upstream))
            return result

    def pick(
        self,
        kinds: Collection[UpstreamKind],
        model: str,
        exclude: Collection[str] = (),
        now: float | None = None,
    ) -> PickResult:
        """Choose the account for the next attempt at `model`."""
        now = time.time() if now is None else now
        serving = self.serving(kinds, model)
        if not serving:
            return NotServed()

        untried = [(account, upstream) for account, upstream in serving if account.id not in exclude]
        if not untried:
            return Exhausted()

        ready: list[tuple[Account, str]] = []
        earliest: Cooldown | None = None
        for account, upstream in untried:
            cooldown = self.cooldowns.blocking(account.id, upstream, now)
            if cooldown is None:
                ready.append((account, upstream))
            elif earliest is None or cooldown.until < earliest.until:
                earliest = cooldown
        if not ready:
            assert earliest is not None
            return AllCooling(retry_after=max(earliest.until - now, 0.0), reason=earliest.reason)

        top = max(account.priority for account, _ in ready)
        tier = [(account, upstream) for account, upstream in ready if account.priority == top]
        if self.strategy == "fill-first" or len(tier) == 1:
            account, upstream = tier[0]
        else:
            key = (frozenset(kinds), model)
            with self._lock:
                cursor = self._cursors.get(key, 0)
                self._cursors[key] = cursor + 1
            account, upstream = tier[cursor % len(tier)]
        return Picked(account, upstream)

    def earliest_recovery(
        self, kinds: Collection[UpstreamKind], model: str, now: float | None = None
    ) -> float | None:
        """Return seconds until the first cooling account for `model` recovers (0 if one is ready)."""
        now = time.time() if now is None else now
        waits = []
        for account, upstream in self.serving(kinds, model):
            cooldown = self.cooldowns.blocking(account.id, upstream, now)
            waits.append(0.0 if cooldown is None else cooldown.until - now)
        return min(waits) if waits else None

    def mark_failure(self, account: Account, model: str, failure: Failure) -> float:
        """Apply the cooldown of `failure`; return its length in seconds."""
        return self.cooldowns.apply(account.id, model, failure, time.time())

    def mark_success(self, account: Account, model: str) -> None:
        self.cooldowns.clear(account.id, model)

    def status(self, account: Account, now: float | None = None) -> AccountStatus:
        """Return the live state of `account`."""
        now = time.time() if now is None else now
        if account.disabled:
            return AccountStatus(AccountState.DISABLED, "disabled")
        with self._lock:
            error = self._errors.get(account.id)
        if error:
            return AccountStatus(AccountState.ERROR, error)
        cooldowns = self.cooldowns.account_cooldowns(account.id, now)
        if not cooldowns:
            return AccountStatus(AccountState.READY)
        model, cooldown = cooldowns[-1]
        seconds = int(cooldown.until - now + 0.999)
        scope = "all models" if model is None else f"model {model}"
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cooldown.until))
        return AccountStatus(
            AccountState.COOLING,
            f"cooling until {until} ({seconds}s) for {scope}: {cooldown.reason}",
            cooldown.until,
        )

    def served_models(
        self, catalog: dict[Family, tuple[str, ...]], kinds: Collection[UpstreamKind] | None = None
    ) -> list[tuple[str, Account]]:
        """Return (model id, first serving account) pairs, each id once, cooling accounts included."""
        seen: dict[str, Account] = {}
        with self._lock:
            accounts = [
                account
                for account in self._accounts
                if not account.disabled and account.id not in self._errors
            ]
        for account in accounts:
            if kinds is not None and account.kind not in kinds:
                continue
            for model in account.listed_models(catalog):
                seen.setdefault(model, account)
        return list(seen.items())
