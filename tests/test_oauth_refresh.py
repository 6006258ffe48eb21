"""Token refresh: single flight, rotation, backoff, invalid_grant, other writers and the scheduler."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from oauth import authfiles
from oauth.clock import format_rfc3339
from oauth.errors import (
    AccountFileMissing,
    AccountFileWriteError,
    InvalidGrant,
    NoRefreshToken,
    RefreshBackoff,
    ReloginRequired,
    TokenEndpointError,
)
from oauth.providers import (
    CLAUDE_CLIENT_ID,
    CODEX_CLIENT_ID,
    GEMINI_CLI_CLIENT_ID,
    GEMINI_CLI_CLIENT_SECRET,
    resolve_endpoints,
)
from oauth.refresh import AccountRef, RefreshScheduler, TokenRefresher
from tests.fakes.oauth_server import FakeClock, FakeOAuthServer

CLIENT_IDS = {"claude": CLAUDE_CLIENT_ID, "codex": CODEX_CLIENT_ID, "gemini": GEMINI_CLI_CLIENT_ID}


@pytest.fixture
def fake():
    with FakeOAuthServer() as server:
        yield server


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def refresher(fake, clock):
    instance = TokenRefresher(
        resolve_endpoints(fake.endpoints_config()), http=fake.http_settings(), clock=clock
    )
    yield instance
    instance.close()


def make_account(
    tmp_path: Path,
    fake: FakeOAuthServer,
    provider: str = "claude",
    *,
    expires_in: timedelta = timedelta(minutes=-5),
    now: datetime | None = None,
    extra: dict | None = None,
) -> AccountRef:
    """Write an account file with a refresh token the fake accepts and a stale access token."""
    now = now or datetime.now(UTC)
    refresh_token = fake.issue_refresh_token(CLIENT_IDS[provider])
    expiry = now + expires_in
    if provider == "gemini":
        data = {
            "type": "gemini",
            "email": "user@example.com",
            "project_id": "p1",
            "token": {
                "access_token": "stale-access",
                "refresh_token": refresh_token,
                "expiry": format_rfc3339(expiry),
                "token_type": "Bearer",
            },
        }
    else:
        data = {
            "type": provider,
            "email": "user@example.com",
            "access_token": "stale-access",
            "refresh_token": refresh_token,
            "expired": format_rfc3339(expiry),
        }
    data.update(extra or {})
    path = tmp_path / f"{provider}-user@example.com.json"
    path.write_text(json.dumps(data))
    return AccountRef(path=path, provider=provider, expires_at=expiry.timestamp())


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def stored_refresh_token(path: Path) -> str:
    data = read(path)
    return data.get("refresh_token") or data["token"]["refresh_token"]


@pytest.mark.parametrize("provider", ["claude", "codex", "gemini"])
def test_refresh_rotates_and_persists(tmp_path, fake, refresher, clock, provider):
    account = make_account(tmp_path, fake, provider, now=clock())
    old_refresh = stored_refresh_token(account.path)

    result = asyncio.run(refresher.refresh(account))

    assert result.refreshed is True
    assert fake.is_valid_access_token(result.access_token)
    assert result.expiry == clock() + timedelta(seconds=fake.access_ttl)
    new_refresh = stored_refresh_token(account.path)
    assert new_refresh != old_refresh
    assert fake.is_valid_refresh_token(new_refresh)
    assert not fake.is_valid_refresh_token(old_refresh)
    assert fake.refresh_calls[old_refresh] == 1


def test_refresh_request_shapes(tmp_path, fake, refresher):
    for provider in ("claude", "codex", "gemini"):
        asyncio.run(refresher.refresh(make_account(tmp_path, fake, provider)))

    claude, codex, gemini = fake.token_requests
    assert claude.content_type.startswith("application/json")
    assert claude.fields["client_id"] == CLAUDE_CLIENT_ID
    assert "user:inference" in claude.fields["scope"]
    assert codex.content_type == "application/x-www-form-urlencoded"
    assert codex.fields["scope"] == "openid profile email"
    assert codex.fields["client_id"] == CODEX_CLIENT_ID
    assert gemini.fields["client_secret"] == GEMINI_CLI_CLIENT_SECRET
    assert "scope" not in gemini.fields
    for request in fake.token_requests:
        assert request.fields["grant_type"] == "refresh_token"


def test_rotated_token_is_on_disk_before_return(tmp_path, fake, refresher, monkeypatch):
    account = make_account(tmp_path, fake, "codex")
    written: list[str] = []
    original_write = authfiles.atomic_write

    def recording_write(path, data, mode=0o600):
        original_write(path, data, mode)
        written.append(json.loads(data)["access_token"])

    monkeypatch.setattr(authfiles, "atomic_write", recording_write)
    result = asyncio.run(refresher.refresh(account))

    assert written == [result.access_token]
    assert read(account.path)["refresh_token"] == result.data["refresh_token"]


def test_write_failure_withholds_token_and_retries_write(tmp_path, fake, refresher, monkeypatch):
    account = make_account(tmp_path, fake, "codex")
    original_write = authfiles.atomic_write

    def failing_write(path, data, mode=0o600):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(authfiles, "atomic_write", failing_write)
    with pytest.raises(AccountFileWriteError):
        asyncio.run(refresher.refresh(account))
    assert read(account.path)["access_token"] == "stale-access"

    monkeypatch.setattr(authfiles, "atomic_write", original_write)
    result = asyncio.run(refresher.refresh(account))

    assert fake.grant_calls["refresh_token"] == 1
    assert read(account.path)["access_token"] == result.access_token
    assert fake.is_valid_refresh_token(stored_refresh_token(account.path))


def test_concurrent_refreshes_share_one_request(tmp_path, fake, refresher):
    account = make_account(tmp_path, fake, "claude")
    fake.token_delay = 0.3

    async def run():
        return await asyncio.gather(*(refresher.refresh(account) for _ in range(20)))

    results = asyncio.run(run())

    assert fake.grant_calls["refresh_token"] == 1
    assert len({result.access_token for result in results}) == 1


def test_threads_share_one_request(tmp_path, fake, refresher):
    account = make_account(tmp_path, fake, "codex")
    fake.token_delay = 0.3
    tokens: list[str] = []
    barrier = threading.Barrier(10)

    def worker():
        barrier.wait()
        tokens.append(refresher.refresh_sync(account).access_token)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert fake.grant_calls["refresh_token"] == 1
    assert len(tokens) == 10
    assert len(set(tokens)) == 1


def test_async_and_sync_callers_share_one_request(tmp_path, fake, refresher):
    account = make_account(tmp_path, fake, "claude")
    fake.token_delay = 0.4

    async def run():
        pending = asyncio.ensure_future(refresher.refresh(account))
        await asyncio.sleep(0.1)
        from_thread = await asyncio.to_thread(refresher.refresh_sync, account)
        return await pending, from_thread

    from_loop, from_thread = asyncio.run(run())

    assert fake.grant_calls["refresh_token"] == 1
    assert from_loop.access_token == from_thread.access_token


def test_cancelled_caller_does_not_cancel_others(tmp_path, fake, refresher):
    account = make_account(tmp_path, fake, "claude")
    fake.token_delay = 0.3

    async def run():
        first = asyncio.ensure_future(refresher.refresh(account))
        second = asyncio.ensure_future(refresher.refresh(account))
        await asyncio.sleep(0.05)
        first.cancel()
        return await second

    result = asyncio.run(run())

    assert fake.is_valid_access_token(result.access_token)
    assert fake.grant_calls["refresh_token"] == 1


def test_invalid_grant_needs_relogin(tmp_path, fake, refresher):
    account = make_account(tmp_path, fake, "claude")
    fake.reject_refresh_token(stored_refresh_token(account.path))

    with pytest.raises(InvalidGrant, match="invalid_grant"):
        asyncio.run(refresher.refresh(account))
    with pytest.raises(ReloginRequired):
        asyncio.run(refresher.refresh(account))
    assert fake.grant_calls["refresh_token"] == 1


def test_new_refresh_token_clears_relogin_mark(tmp_path, fake, refresher):
    account = make_account(tmp_path, fake, "claude")
    fake.reject_refresh_token(stored_refresh_token(account.path))
    with pytest.raises(InvalidGrant):
        asyncio.run(refresher.refresh(account))

    data = read(account.path)
    data["refresh_token"] = fake.issue_refresh_token(CLAUDE_CLIENT_ID)
    account.path.write_text(json.dumps(data))
    result = asyncio.run(refresher.refresh(account))

    assert result.refreshed is True
    assert fake.grant_calls["refresh_token"] == 2


def test_invalid_grant_after_rotation_by_other_program(tmp_path, fake, refresher, clock):
    account = make_account(tmp_path, fake, "claude", now=clock())
    ours = stored_refresh_token(account.path)
    fake.token_delay = 0.5

    async def run():
        task = asyncio.ensure_future(refresher.refresh(account))
        await asyncio.sleep(0.15)
        # Another program refreshed with the same token first, so the fake now rejects ours.
        fake.reject_refresh_token(ours)
        data = read(account.path)
        data["access_token"] = "theirs"
        data["refresh_token"] = fake.issue_refresh_token(CLAUDE_CLIENT_ID)
        data["expired"] = format_rfc3339(clock() + timedelta(hours=8))
        account.path.write_text(json.dumps(data))
        return await task

    result = asyncio.run(run())

    # The fake checks the refresh token after its delay, so our request got invalid_grant.
    assert fake.grant_calls["refresh_token"] == 1
    assert result.refreshed is False
    assert result.access_token == "theirs"
    assert read(account.path)["access_token"] == "theirs"


def test_newer_token_on_disk_wins_during_slow_refresh(tmp_path, fake, refresher, clock):
    account = make_account(tmp_path, fake, "codex", now=clock())
    fake.token_delay = 0.5
    theirs_expiry = clock() + timedelta(days=9)

    async def run():
        task = asyncio.ensure_future(refresher.refresh(account))
        await asyncio.sleep(0.15)
        data = read(account.path)
        data.update(
            access_token="written-by-other",
            refresh_token="other-refresh",
            expired=format_rfc3339(theirs_expiry),
            note="set by other",
        )
        account.path.write_text(json.dumps(data))
        return await task

    result = asyncio.run(run())

    assert fake.grant_calls["refresh_token"] == 1
    assert result.refreshed is False
    assert result.access_token == "written-by-other"
    assert result.expiry == theirs_expiry
    on_disk = read(account.path)
    assert on_disk["access_token"] == "written-by-other"
    assert on_disk["refresh_token"] == "other-refresh"
    assert on_disk["note"] == "set by other"


def test_field_edit_during_slow_refresh_is_kept(tmp_path, fake, refresher):
    account = make_account(tmp_path, fake, "claude")
    fake.token_delay = 0.5

    async def run():
        task = asyncio.ensure_future(refresher.refresh(account))
        await asyncio.sleep(0.15)
        data = read(account.path)
        data["priority"] = 9
        account.path.write_text(json.dumps(data))
        return await task

    result = asyncio.run(run())

    on_disk = read(account.path)
    assert result.refreshed is True
    assert on_disk["access_token"] == result.access_token
    assert on_disk["priority"] == 9


def test_deleted_file_is_not_refreshed(tmp_path, fake, refresher):
    account = make_account(tmp_path, fake, "claude")
    account.path.unlink()

    with pytest.raises(AccountFileMissing):
        asyncio.run(refresher.refresh(account))
    assert fake.grant_calls["refresh_token"] == 0
    assert not account.path.exists()


def test_file_deleted_during_refresh_is_not_recreated(tmp_path, fake, refresher):
    account = make_account(tmp_path, fake, "claude")
    fake.token_delay = 0.4

    async def run():
        task = asyncio.ensure_future(refresher.refresh(account))
        await asyncio.sleep(0.1)
        account.path.unlink()
        return await task

    with pytest.raises(AccountFileMissing):
        asyncio.run(run())
    assert not account.path.exists()


def test_missing_refresh_token(tmp_path, fake, refresher):
    path = tmp_path / "claude-x.json"
    path.write_text(json.dumps({"type": "claude", "access_token": "a", "expired": "2020-01-01T00:00:00Z"}))

    with pytest.raises(NoRefreshToken):
        asyncio.run(refresher.refresh(AccountRef(path, "claude")))


def test_backoff_after_server_error(tmp_path, fake, refresher, clock):
    account = make_account(tmp_path, fake, "codex", now=clock())
    fake.fail_next(1, status=503)

    with pytest.raises(TokenEndpointError, match="HTTP 503"):
        asyncio.run(refresher.refresh(account))
    with pytest.raises(RefreshBackoff):
        asyncio.run(refresher.refresh(account))
    assert fake.grant_calls["refresh_token"] == 1
    assert refresher.retry_at(account) == clock() + timedelta(seconds=30)

    clock.advance(seconds=31)
    fake.fail_next(1, status=502)
    with pytest.raises(TokenEndpointError):
        asyncio.run(refresher.refresh(account))
    assert refresher.retry_at(account) == clock() + timedelta(minutes=1)

    clock.advance(minutes=2)
    result = asyncio.run(refresher.refresh(account))
    assert result.refreshed is True
    assert refresher.retry_at(account) is None


def test_rate_limit_backoff_uses_retry_after(tmp_path, fake, refresher, clock):
    account = make_account(tmp_path, fake, "claude", now=clock())
    fake.fail_next(1, status=429)

    with pytest.raises(TokenEndpointError):
        asyncio.run(refresher.refresh(account))
    assert refresher.retry_at(account) == clock() + timedelta(seconds=30)


def test_keeps_old_refresh_token_when_none_returned(tmp_path, fake, refresher):
    account = make_account(tmp_path, fake, "gemini")
    old_refresh = stored_refresh_token(account.path)
    fake.omit_refresh_token = True

    result = asyncio.run(refresher.refresh(account))

    assert fake.is_valid_access_token(result.access_token)
    assert stored_refresh_token(account.path) == old_refresh
    assert read(account.path)["token"]["access_token"] == result.access_token


def test_ensure_fresh_valid_token_needs_no_io(tmp_path, refresher, clock):
    account = AccountRef(
        path=tmp_path / "does-not-exist.json",
        provider="claude",
        expires_at=(clock() + timedelta(hours=1)).timestamp(),
    )
    assert asyncio.run(refresher.ensure_fresh(account)) is None


def test_ensure_fresh_refreshes_expired_token(tmp_path, fake, refresher, clock):
    account = make_account(tmp_path, fake, "codex", expires_in=timedelta(minutes=-1), now=clock())

    result = asyncio.run(refresher.ensure_fresh(account))

    assert result is not None
    assert result.refreshed is True
    assert fake.is_valid_access_token(result.access_token)
    assert result.expires_at == (clock() + timedelta(seconds=fake.access_ttl)).timestamp()


def test_ensure_fresh_uses_newer_file_token(tmp_path, fake, refresher, clock):
    account = make_account(tmp_path, fake, "codex", expires_in=timedelta(hours=2), now=clock())
    stale = AccountRef(account.path, "codex", expires_at=(clock() - timedelta(minutes=1)).timestamp())

    result = asyncio.run(refresher.ensure_fresh(stale))

    assert result is not None
    assert result.refreshed is False
    assert result.access_token == "stale-access"
    assert fake.grant_calls["refresh_token"] == 0


def test_ensure_fresh_expired_during_backoff(tmp_path, fake, refresher, clock):
    account = make_account(tmp_path, fake, "codex", now=clock())
    fake.fail_next(1)
    with pytest.raises(TokenEndpointError):
        asyncio.run(refresher.refresh(account))

    with pytest.raises(RefreshBackoff):
        asyncio.run(refresher.ensure_fresh(account))
    assert fake.grant_calls["refresh_token"] == 1


def test_ensure_fresh_near_expiry_during_backoff_keeps_token(tmp_path, fake, refresher, clock):
    account = make_account(tmp_path, fake, "codex", expires_in=timedelta(seconds=30), now=clock())
    fake.fail_next(1)
    with pytest.raises(TokenEndpointError):
        asyncio.run(refresher.refresh(account))

    result = asyncio.run(refresher.ensure_fresh(account))

    assert result is not None
    assert result.access_token == "stale-access"
    assert fake.grant_calls["refresh_token"] == 1


def test_force_refresh_reuses_replaced_token(tmp_path, fake, refresher, clock):
    account = make_account(tmp_path, fake, "claude", expires_in=timedelta(hours=3), now=clock())

    result = asyncio.run(refresher.force_refresh(account, failed_access_token="rejected-by-upstream"))

    assert result.refreshed is False
    assert result.access_token == "stale-access"
    assert fake.grant_calls["refresh_token"] == 0


def test_force_refresh_after_401(tmp_path, fake, refresher, clock):
    account = make_account(tmp_path, fake, "claude", expires_in=timedelta(hours=3), now=clock())

    result = asyncio.run(refresher.force_refresh(account, failed_access_token="stale-access"))

    assert result.refreshed is True
    assert result.access_token != "stale-access"
    assert fake.grant_calls["refresh_token"] == 1


def test_scheduler_refreshes_before_expiry(tmp_path, fake):
    endpoints = resolve_endpoints(fake.endpoints_config())
    refresher = TokenRefresher(endpoints, http=fake.http_settings())
    expiry = datetime.now(UTC) + timedelta(seconds=3)
    account = make_account(tmp_path, fake, "codex", expires_in=expiry - datetime.now(UTC))
    refreshed_at: list[float] = []
    results = []

    def on_refreshed(acct, result):
        refreshed_at.append(time.time())
        results.append(result)

    async def run():
        scheduler = RefreshScheduler(
            refresher,
            lambda: [account],
            leads={"codex": timedelta(seconds=2)},
            poll_interval=0.05,
            on_refreshed=on_refreshed,
        )
        scheduler.start()
        await asyncio.sleep(1.6)
        await scheduler.stop()

    try:
        asyncio.run(run())
    finally:
        refresher.close()

    assert fake.grant_calls["refresh_token"] == 1
    assert len(refreshed_at) == 1
    assert refreshed_at[0] < expiry.timestamp()
    assert refreshed_at[0] >= expiry.timestamp() - 2.5
    assert results[0].expiry > expiry
    assert read(account.path)["access_token"] == results[0].access_token


def test_scheduler_skips_deleted_not_due_and_disabled(tmp_path, fake, refresher, clock):
    (tmp_path / "a").mkdir()
    due_deleted = make_account(tmp_path / "a", fake, "claude", now=clock())
    due_deleted.path.unlink()
    not_due = make_account(tmp_path, fake, "codex", expires_in=timedelta(days=30), now=clock())
    (tmp_path / "d").mkdir()
    disabled_file = make_account(tmp_path / "d", fake, "claude", now=clock())

    class DisabledAccount:
        path = disabled_file.path
        provider = "claude"
        expires_at = disabled_file.expires_at
        disabled = True

    no_path = AccountRef(path=None, provider="claude", expires_at=0.0)  # type: ignore[arg-type]
    api_key = AccountRef(path=tmp_path / "k.json", provider="openai-compatibility", expires_at=0.0)

    async def run():
        scheduler = RefreshScheduler(
            refresher, lambda: [due_deleted, not_due, DisabledAccount(), no_path, api_key]
        )
        return await scheduler.run_once()

    assert asyncio.run(run()) == []
    assert fake.grant_calls["refresh_token"] == 0


def test_scheduler_reports_invalid_grant(tmp_path, fake, refresher, clock):
    account = make_account(tmp_path, fake, "claude", now=clock())
    fake.reject_refresh_token(stored_refresh_token(account.path))
    errors = []

    async def run():
        scheduler = RefreshScheduler(
            refresher, lambda: [account], on_error=lambda acct, exc: errors.append(exc)
        )
        await asyncio.gather(*await scheduler.run_once())
        await asyncio.gather(*await scheduler.run_once())

    asyncio.run(run())

    assert len(errors) == 1
    assert isinstance(errors[0], InvalidGrant)
    assert fake.grant_calls["refresh_token"] == 1


def test_scheduler_waits_out_backoff(tmp_path, fake, refresher, clock):
    account = make_account(tmp_path, fake, "codex", now=clock())
    fake.fail_next(1)
    errors = []

    async def run():
        scheduler = RefreshScheduler(
            refresher, lambda: [account], on_error=lambda acct, exc: errors.append(exc)
        )
        await asyncio.gather(*await scheduler.run_once())
        skipped = await scheduler.run_once()
        clock.advance(seconds=31)
        await asyncio.gather(*await scheduler.run_once())
        return skipped

    skipped = asyncio.run(run())

    assert skipped == []
    assert len(errors) == 1
    assert fake.grant_calls["refresh_token"] == 2
