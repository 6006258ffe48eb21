"""Keeping access tokens fresh: single-flight refresh per account, backoff and a scheduler.

`TokenRefresher` renews one account's access token with its refresh token. Concurrent callers
for the same account share one token request, whether they are coroutines (`await
refresh()`, `ensure_fresh()`, `force_refresh()`) or threads (`refresh_sync()`). The async
methods run the blocking HTTP in worker threads, never on the event loop. A rotated refresh
token is written to the account file before any caller sees the new access token, because
losing it would force a new login.

`RefreshScheduler` is an asyncio task that refreshes accounts ahead of expiry, using each
provider's lead time (Claude 4 h, Codex 5 days, Gemini 5 min).

How the pool uses them:

- before a request: `await refresher.ensure_fresh(account)`; None means the in-memory token
  is still good, otherwise use the returned token;
- after an upstream 401: `await refresher.force_refresh(account, failed_access_token=...)`
  and retry once with the returned token;
- `InvalidGrant`, `ReloginRequired` and `NoRefreshToken` mean the account needs a new login:
  set its status to `error` with the exception's message;
- `RefreshBackoff` and `TokenEndpointError` are transient: skip the account for now.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from oauth.authfiles import AccountFile, read_account_file, stored_tokens, update_tokens
from oauth.clock import Clock, utc_now
from oauth.errors import (
    AccountFileMissing,
    AccountFileWriteError,
    InvalidConfig,
    InvalidGrant,
    NoRefreshToken,
    OAuthError,
    RateLimited,
    RefreshBackoff,
    ReloginRequired,
    TokenEndpointError,
    TokenRequestRejected,
)
from oauth.http import HttpSettings
from oauth.providers import Endpoints, get_provider
from oauth.tokens import TokenSet, refresh_access_token

logger = logging.getLogger(__name__)

# Waits after consecutive failed refreshes of one account; the last value repeats.
DEFAULT_BACKOFF_STEPS: tuple[timedelta, ...] = (
    timedelta(seconds=30),
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(minutes=30),
)

# `ensure_fresh` refreshes a token that expires within this margin, so that it cannot expire
# while the request is on its way.
DEFAULT_EXPIRY_SKEW = timedelta(seconds=60)


class RefreshableAccount(Protocol):
    """The account attributes the refresher reads; the pool's `Account` has all of them.

    `provider` is `claude`, `codex`, `gemini` or `gemini-cli`. `expires_at` is the in-memory
    access token's expiry in unix seconds, or None when unknown.
    """

    @property
    def path(self) -> Path | None: ...

    @property
    def provider(self) -> str: ...

    @property
    def expires_at(self) -> float | None: ...


@dataclass(frozen=True)
class AccountRef:
    """A minimal `RefreshableAccount` for callers without a pool account."""

    path: Path
    provider: str
    expires_at: float | None = None


@dataclass(frozen=True)
class RefreshResult:
    """The access token to use after a refresh call, as now stored in the account file.

    `refreshed` is False when no token request was needed: another program or request had
    already stored a newer token, or `ensure_fresh` found the stored token still valid.
    `data` is the account file's content after the call.
    """

    path: Path
    access_token: str = field(repr=False)
    expiry: datetime | None
    refreshed: bool
    data: Mapping[str, Any] = field(repr=False)

    @property
    def expires_at(self) -> float | None:
        """The expiry in unix seconds, as the pool's `Account.expires_at` stores it."""
        return self.expiry.timestamp() if self.expiry is not None else None


class _Mode(Enum):
    REFRESH = "refresh"  # always send a token request
    ENSURE = "ensure"  # only when the stored token expires within the skew
    FORCE = "force"  # after a 401: unless the stored token already differs from the failed one


@dataclass(frozen=True)
class _Request:
    mode: _Mode
    skew: timedelta = DEFAULT_EXPIRY_SKEW
    failed_access_token: str | None = field(default=None, repr=False)


@dataclass
class _AccountState:
    failures: int = 0
    retry_at: datetime | None = None
    # sha256 of the refresh token that got invalid_grant. Refreshes stop until the file
    # contains a different refresh token.
    rejected_refresh_digest: str | None = None
    # Tokens received but not yet written, because the write failed; retried first.
    unsaved: TokenSet | None = field(default=None, repr=False)


class TokenRefresher:
    """Refreshes OAuth access tokens of account files, one token request per account at a time.

    `endpoints` is the mapping from `resolve_endpoints()`. `backoff_steps` are the waits after
    consecutive failures. All methods are safe to call from several threads; the async ones
    must be called on a running event loop.
    """

    def __init__(
        self,
        endpoints: Mapping[str, Endpoints],
        *,
        http: HttpSettings | None = None,
        clock: Clock = utc_now,
        backoff_steps: tuple[timedelta, ...] = DEFAULT_BACKOFF_STEPS,
        max_workers: int = 8,
    ) -> None:
        if not backoff_steps:
            raise ValueError("backoff_steps must contain at least one wait")
        self._endpoints = dict(endpoints)
        self._http = http or HttpSettings()
        self.clock = clock
        self._backoff_steps = backoff_steps
        self._lock = threading.Lock()
        self._in_flight: dict[str, Future[RefreshResult]] = {}
        self._states: dict[str, _AccountState] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        # Token requests get their own threads instead of asyncio.to_thread's default
        # executor: that one also resolves host names for the event loop, and slow token
        # endpoints must not delay the proxy's own connections.
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="oauth-refresh")

    async def refresh(self, account: RefreshableAccount) -> RefreshResult:
        """Refresh the account's access token now, or join the refresh already in flight."""
        return await self._run_async(account, _Request(_Mode.REFRESH))

    def refresh_sync(self, account: RefreshableAccount) -> RefreshResult:
        """Blocking `refresh()` for threads; never call it on an event loop thread."""
        return self._run_sync(account, _Request(_Mode.REFRESH))

    async def ensure_fresh(
        self, account: RefreshableAccount, *, skew: timedelta = DEFAULT_EXPIRY_SKEW
    ) -> RefreshResult | None:
        """Make sure the account has an access token valid for at least `skew`.

        Returns None without any I/O when `account.expires_at` is beyond now + `skew`, so the
        caller's token remains valid. Otherwise the account file decides: a still-valid stored token
        (or one without any expiry) is returned as is, and an expired one is refreshed.
        Raises RefreshBackoff when the token has expired and the last refresh failed
        recently, and the errors of `refresh()`.
        """
        expires_at = account.expires_at
        if expires_at is not None:
            expiry = datetime.fromtimestamp(expires_at, UTC)
            if expiry - self.clock() > skew:
                return None
        return await self._run_async(account, _Request(_Mode.ENSURE, skew=skew))

    async def force_refresh(
        self, account: RefreshableAccount, *, failed_access_token: str | None = None
    ) -> RefreshResult:
        """Refresh after the upstream rejected a token with 401.

        When `failed_access_token` is given and the account file already contains a different,
        unexpired token (another request or program refreshed meanwhile), that token is
        returned without a token request.
        """
        request = _Request(_Mode.FORCE, failed_access_token=failed_access_token)
        return await self._run_async(account, request)

    def retry_at(self, account: RefreshableAccount) -> datetime | None:
        """Return when a failed account may be refreshed again, or None without a backoff."""
        with self._lock:
            state = self._states.get(_key(account))
            return state.retry_at if state else None

    def is_refreshing(self, account: RefreshableAccount) -> bool:
        """Return whether a token request for the account is in flight."""
        with self._lock:
            return _key(account) in self._in_flight

    def forget(self, account: RefreshableAccount) -> None:
        """Drop the account's backoff and invalid_grant marks (for example after removal)."""
        with self._lock:
            self._states.pop(_key(account), None)

    def close(self, *, wait: bool = True) -> None:
        """Stop the worker threads once running token requests finish.

        With `wait=False` it returns at once; use that on an event loop thread.
        """
        self._executor.shutdown(wait=wait)

    async def _run_async(self, account: RefreshableAccount, request: _Request) -> RefreshResult:
        path = _path(account)
        key = str(path)
        future, owner = self._claim(key)
        if owner:
            loop = asyncio.get_running_loop()
            task = loop.run_in_executor(self._executor, self._run_flight, key, future, path, request)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # shield() keeps a cancelled caller from cancelling the shared future of the others.
        return await asyncio.shield(asyncio.wrap_future(future))

    def _run_sync(self, account: RefreshableAccount, request: _Request) -> RefreshResult:
        path = _path(account)
        key = str(path)
        future, owner = self._claim(key)
        if owner:
            self._run_flight(key, future, path, request)
        return future.result()

    def _claim(self, key: str) -> tuple[Future[RefreshResult], bool]:
        """Return the in-flight future of `key` and whether the caller must run it."""
        with self._lock:
            future = self._in_flight.get(key)
            # A finished future may linger until its worker thread removes it; a caller that
            # arrives after the result was delivered starts a new refresh.
            if future is not None and not future.done():
                return future, False
            future = Future()
            future.set_running_or_notify_cancel()
            self._in_flight[key] = future
            return future, True

    def _run_flight(
        self, key: str, future: Future[RefreshResult], path: Path, request: _Request
    ) -> None:
        try:
            result = self._refresh_blocking(key, path, request)
        except BaseException as exc:  # noqa: BLE001 - every waiter must be woken, whatever failed
            future.set_exception(exc)
        else:
            future.set_result(result)
        finally:
            with self._lock:
                if self._in_flight.get(key) is future:
                    del self._in_flight[key]

    def _refresh_blocking(self, key: str, path: Path, request: _Request) -> RefreshResult:
        loaded = read_account_file(path)
        provider = get_provider(str(loaded.data.get("type", "")))
        stored = stored_tokens(loaded.data)
        now = self.clock()
        token_valid = stored.access_token is not None and (
            stored.expiry is None or stored.expiry > now
        )

        if request.mode is _Mode.ENSURE and stored.access_token:
            if stored.expiry is None or stored.expiry - now > request.skew:
                return _stored_result(loaded, refreshed=False)
        if (
            request.mode is _Mode.FORCE
            and request.failed_access_token is not None
            and token_valid
            and stored.access_token != request.failed_access_token
        ):
            logger.info("access token of %s was already replaced; reusing it", path.name)
            return _stored_result(loaded, refreshed=False)

        unsaved = self._take_unsaved(key)
        if unsaved is not None:
            return self._store(key, path, loaded, unsaved)

        if not stored.refresh_token:
            raise NoRefreshToken(
                f"account file {path.name} has no refresh token: log in to this account again"
            )
        if not self._refresh_allowed(key, path, stored.refresh_token, token_valid, request):
            # Still valid but close to expiry, and backoff or invalid_grant block a refresh.
            return _stored_result(loaded, refreshed=False)

        try:
            tokens = refresh_access_token(
                provider,
                self._endpoints[provider.name],
                stored.refresh_token,
                now=self.clock(),
                http=self._http,
            )
        except InvalidGrant:
            replaced = self._token_replaced_meanwhile(path, stored.refresh_token)
            if replaced is not None:
                return replaced
            self._mark_rejected(key, stored.refresh_token)
            logger.warning(
                "refresh token of %s was rejected (invalid_grant); the account needs a new login",
                path.name,
            )
            raise
        except (TokenEndpointError, TokenRequestRejected) as exc:
            retry_at = self._note_failure(key, exc)
            logger.warning(
                "refresh of %s failed: %s; next attempt after %s", path.name, exc, retry_at
            )
            raise
        return self._store(key, path, loaded, tokens)

    def _refresh_allowed(
        self,
        key: str,
        path: Path,
        refresh_token: str,
        token_valid: bool,
        request: _Request,
    ) -> bool:
        """Return whether a token request may be sent now.

        Backoff after a failure or an earlier invalid_grant for this refresh token forbid it.
        Then ENSURE with a still-valid token gets False, so it keeps that token; every other
        request raises RefreshBackoff or ReloginRequired.
        """
        lenient = request.mode is _Mode.ENSURE and token_valid
        with self._lock:
            state = self._states.get(key)
            if state is None:
                return True
            if state.rejected_refresh_digest is not None:
                if state.rejected_refresh_digest != _digest(refresh_token):
                    # A new login or another program stored a different refresh token.
                    state.rejected_refresh_digest = None
                    state.failures = 0
                    state.retry_at = None
                elif lenient:
                    return False
                else:
                    raise ReloginRequired(
                        f"refresh token of {path.name} was rejected earlier (invalid_grant): "
                        "log in to this account again"
                    )
            if state.retry_at is not None and self.clock() < state.retry_at:
                if lenient:
                    return False
                raise RefreshBackoff(
                    f"refresh of {path.name} failed recently; next attempt after "
                    f"{state.retry_at.isoformat()}",
                    retry_at=state.retry_at,
                )
        return True

    def _store(self, key: str, path: Path, loaded: AccountFile, tokens: TokenSet) -> RefreshResult:
        """Write refreshed tokens before anyone may use them, then clear the failure state."""
        try:
            update = update_tokens(path, tokens, loaded.mtime_ns, now=self.clock())
        except AccountFileMissing:
            logger.info("account file %s was deleted during its refresh; not recreating it", path.name)
            raise
        except OSError as exc:
            with self._lock:
                self._states.setdefault(key, _AccountState()).unsaved = tokens
            logger.error(
                "refreshed tokens of %s could not be written (%s); keeping them in memory "
                "and retrying the write on the next refresh",
                path.name,
                exc,
            )
            raise AccountFileWriteError(
                f"refreshed tokens of {path.name} could not be written: {exc}"
            ) from exc

        with self._lock:
            self._states.pop(key, None)
        stored = update.tokens
        if update.kept_newer_on_disk:
            logger.info("%s already held a newer token; using it", path.name)
        else:
            logger.info("refreshed access token of %s; expires %s", path.name, stored.expiry)
        return RefreshResult(
            path=path,
            access_token=stored.access_token or "",
            expiry=stored.expiry,
            refreshed=not update.kept_newer_on_disk,
            data=update.data,
        )

    def _token_replaced_meanwhile(self, path: Path, rejected: str) -> RefreshResult | None:
        """Return the file's token if another program rotated the refresh token meanwhile."""
        current = read_account_file(path)
        tokens = stored_tokens(current.data)
        now = self.clock()
        if (
            tokens.refresh_token
            and tokens.refresh_token != rejected
            and tokens.access_token
            and (tokens.expiry is None or tokens.expiry > now)
        ):
            logger.info(
                "refresh token of %s was rotated by another program; using its token", path.name
            )
            return _stored_result(current, refreshed=False)
        return None

    def _take_unsaved(self, key: str) -> TokenSet | None:
        with self._lock:
            state = self._states.get(key)
            if state is None or state.unsaved is None:
                return None
            unsaved, state.unsaved = state.unsaved, None
            return unsaved

    def _mark_rejected(self, key: str, refresh_token: str) -> None:
        with self._lock:
            state = self._states.setdefault(key, _AccountState())
            state.rejected_refresh_digest = _digest(refresh_token)

    def _note_failure(self, key: str, exc: OAuthError) -> datetime:
        with self._lock:
            state = self._states.setdefault(key, _AccountState())
            step = self._backoff_steps[min(state.failures, len(self._backoff_steps) - 1)]
            if isinstance(exc, RateLimited) and exc.retry_after is not None:
                step = max(step, timedelta(seconds=exc.retry_after))
            state.failures += 1
            state.retry_at = self.clock() + step
            return state.retry_at


class RefreshScheduler:
    """An asyncio task that refreshes OAuth accounts before their access tokens expire.

    `list_accounts` returns the current accounts; it runs on the event loop at every check,
    so it must be cheap (an in-memory list). An account is refreshed once
    `expires_at - lead` has passed, where `lead` comes from `leads` (by provider name) or
    the provider's default. Accounts without a path, without an expiry, marked `disabled`,
    whose file was deleted, or in backoff are skipped. Results go to `on_refreshed`
    and failures to `on_error`; both run on the event loop and must not block.
    """

    def __init__(
        self,
        refresher: TokenRefresher,
        list_accounts: Callable[[], Iterable[RefreshableAccount]],
        *,
        leads: Mapping[str, timedelta] | None = None,
        poll_interval: float = 5.0,
        max_concurrent: int = 16,
        on_refreshed: Callable[[RefreshableAccount, RefreshResult], None] | None = None,
        on_error: Callable[[RefreshableAccount, OAuthError], None] | None = None,
    ) -> None:
        self._refresher = refresher
        self._list_accounts = list_accounts
        self._leads = {get_provider(name).name: lead for name, lead in (leads or {}).items()}
        self._poll_interval = poll_interval
        self._max_concurrent = max_concurrent
        self._on_refreshed = on_refreshed
        self._on_error = on_error
        self._running: dict[str, asyncio.Task[None]] = {}
        # Expiries learned from our own refreshes, in case the pool has not updated yet.
        self._known_expiry: dict[str, datetime] = {}
        self._wake_event: asyncio.Event | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Start the background task on the running event loop and return it."""
        if self._loop_task is not None and not self._loop_task.done():
            return self._loop_task
        self._wake_event = asyncio.Event()
        self._semaphore = asyncio.Semaphore(self._max_concurrent)
        self._loop_task = asyncio.create_task(self._loop(), name="oauth-refresh-scheduler")
        logger.info("token refresh scheduler started")
        return self._loop_task

    def wake(self) -> None:
        """Check the accounts now instead of at the next poll (for example after a reload)."""
        if self._wake_event is not None:
            self._wake_event.set()

    async def stop(self) -> None:
        """Stop the background task and cancel refreshes it is waiting for.

        Token requests already sent finish in their threads and still write the file.
        """
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        running = list(self._running.values())
        for refresh_task in running:
            refresh_task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        logger.info("token refresh scheduler stopped")

    async def run_once(self) -> list[asyncio.Task[None]]:
        """Start refreshes for every due account and return their tasks (tests await them)."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self._max_concurrent)
        started, _ = self._start_due_refreshes()
        return started

    async def _loop(self) -> None:
        assert self._wake_event is not None
        while True:
            try:
                _, next_due = self._start_due_refreshes()
            except Exception:  # noqa: BLE001 - the loop must survive a bad account list
                logger.exception("token refresh check failed; retrying at the next poll")
                next_due = None
            delay = self._poll_interval
            if next_due is not None:
                until_due = (next_due - self._refresher.clock()).total_seconds()
                delay = min(delay, max(until_due, 0.0))
            self._wake_event.clear()
            try:
                await asyncio.wait_for(self._wake_event.wait(), timeout=delay)
            except TimeoutError:
                pass

    def _start_due_refreshes(self) -> tuple[list[asyncio.Task[None]], datetime | None]:
        now = self._refresher.clock()
        started: list[asyncio.Task[None]] = []
        next_due: datetime | None = None
        for account in self._list_accounts():
            due_at = self._due_at(account)
            if due_at is None:
                continue
            key = str(_path(account))
            if key in self._running:
                continue
            retry_at = self._refresher.retry_at(account)
            if retry_at is not None and retry_at > due_at:
                due_at = retry_at
            if due_at > now:
                next_due = due_at if next_due is None else min(next_due, due_at)
                continue
            if not Path(key).exists():
                logger.info("skipping refresh of %s: its account file was deleted", Path(key).name)
                continue
            task = asyncio.create_task(self._refresh_one(key, account))
            self._running[key] = task
            task.add_done_callback(functools.partial(self._forget_task, key))
            started.append(task)
        return started, next_due

    def _forget_task(self, key: str, task: asyncio.Task[None]) -> None:
        if self._running.get(key) is task:
            del self._running[key]

    def _due_at(self, account: RefreshableAccount) -> datetime | None:
        if account.path is None or getattr(account, "disabled", False) is True:
            return None
        try:
            provider = get_provider(account.provider)
        except InvalidConfig:
            return None
        if account.expires_at is None:
            # NOTE: accounts without an expiry are refreshed lazily by ensure_fresh and
            # force_refresh only.
            return None
        expiry = datetime.fromtimestamp(account.expires_at, UTC)
        known = self._known_expiry.get(str(_path(account)))
        if known is not None and known > expiry:
            expiry = known
        return expiry - self._leads.get(provider.name, provider.refresh_lead)

    async def _refresh_one(self, key: str, account: RefreshableAccount) -> None:
        assert self._semaphore is not None
        async with self._semaphore:
            try:
                result = await self._refresher.refresh(account)
            except ReloginRequired as exc:
                logger.debug("not refreshing %s: %s", Path(key).name, exc)
                return
            except AccountFileMissing:
                return
            except OAuthError as exc:
                self._report_error(account, exc)
                return
            except Exception:  # noqa: BLE001 - one account's bug must not stop the others
                logger.exception("refresh of %s failed unexpectedly", Path(key).name)
                return
        if result.expiry is not None:
            self._known_expiry[key] = result.expiry
        if self._on_refreshed is not None:
            try:
                self._on_refreshed(account, result)
            except Exception:  # noqa: BLE001 - a consumer bug must not stop the scheduler
                logger.exception("on_refreshed hook failed for %s", Path(key).name)

    def _report_error(self, account: RefreshableAccount, exc: OAuthError) -> None:
        if self._on_error is None:
            return
        try:
            self._on_error(account, exc)
        except Exception:  # noqa: BLE001 - a consumer bug must not stop the scheduler
            logger.exception("on_error hook failed")


def _stored_result(loaded: AccountFile, *, refreshed: bool) -> RefreshResult:
    tokens = stored_tokens(loaded.data)
    return RefreshResult(
        path=loaded.path,
        access_token=tokens.access_token or "",
        expiry=tokens.expiry,
        refreshed=refreshed,
        data=loaded.data,
    )


def _path(account: RefreshableAccount) -> Path:
    if account.path is None:
        raise NoRefreshToken("account has no account file, so it has no refresh token")
    return Path(account.path).absolute()


def _key(account: RefreshableAccount) -> str:
    return str(_path(account))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
