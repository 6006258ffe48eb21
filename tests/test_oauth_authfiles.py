"""Account files: naming, expiry parsing, atomic writes and merging with other writers."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from oauth import authfiles
from oauth.authfiles import (
    account_file_name,
    apply_tokens,
    merge_login_record,
    read_account_file,
    read_expiry,
    update_tokens,
)
from oauth.errors import AccountFileInvalid, AccountFileMissing, IdentityError
from oauth.identity import AccountIdentity
from oauth.providers import CLAUDE, CODEX, GEMINI
from oauth.tokens import TokenSet

NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
EXPECTED = datetime(2026, 5, 1, 13, 30, 0, tzinfo=UTC)


def _tokens(access="new-access", refresh="new-refresh", expiry=NOW + timedelta(hours=1), id_token=None):
    return TokenSet(access_token=access, refresh_token=refresh, expiry=expiry, id_token=id_token)


def _write(path: Path, data: dict) -> int:
    path.write_text(json.dumps(data))
    return path.stat().st_mtime_ns


def _bump_mtime(path: Path, data: dict) -> None:
    """Rewrite the file as another program would, with a visibly newer mtime."""
    before = path.stat().st_mtime_ns
    path.write_text(json.dumps(data))
    os.utime(path, ns=(before + 10_000_000, before + 10_000_000))


@pytest.mark.parametrize(
    "data",
    [
        {"expired": "2026-05-01T13:30:00Z"},
        {"expired": "2026-05-01T15:30:00+02:00"},
        {"expired": "2026-05-01T13:30:00.000000000Z"},
        {"expired": "2026-05-01 13:30:00"},
        {"expired": "2026-05-01 13:30"},
        {"expire": "2026-05-01T13:30:00Z"},
        {"expires_at": int(EXPECTED.timestamp())},
        {"expiresAt": int(EXPECTED.timestamp()) * 1000},
        {"expiry": str(int(EXPECTED.timestamp()))},
        {"expires": float(EXPECTED.timestamp())},
        {"token": {"expiry": "2026-05-01T13:30:00.123456789Z"}},
        {"token": {"expires_at": int(EXPECTED.timestamp())}},
    ],
)
def test_read_expiry_formats(data):
    expiry = read_expiry(data)
    assert expiry is not None
    assert expiry.replace(microsecond=0) == EXPECTED


def test_read_expiry_prefers_top_level():
    data = {"expired": "2026-05-01T13:30:00Z", "token": {"expiry": "2030-01-01T00:00:00Z"}}
    assert read_expiry(data) == EXPECTED


@pytest.mark.parametrize(
    "data",
    [{}, {"expired": ""}, {"expired": "soon"}, {"expired": True}, {"expired": None}, {"token": "x"}],
)
def test_read_expiry_missing_or_invalid(data):
    assert read_expiry(data) is None


def test_read_expiry_skips_invalid_key():
    assert read_expiry({"expired": "soon", "expiry": "2026-05-01T13:30:00Z"}) == EXPECTED


def test_file_names_per_provider():
    codex_hash = hashlib.sha256(b"acct-1").hexdigest()[:8]
    assert account_file_name(CLAUDE, AccountIdentity(email="a@b.c")) == "claude-a@b.c.json"
    assert (
        account_file_name(CODEX, AccountIdentity(email="a@b.c", account_id="acct-1", plan="Pro Plus"))
        == f"codex-{codex_hash}-a@b.c-pro-plus.json"
    )
    assert (
        account_file_name(CODEX, AccountIdentity(email="a@b.c", account_id="acct-1"))
        == f"codex-{codex_hash}-a@b.c.json"
    )
    assert account_file_name(CODEX, AccountIdentity(email="a@b.c", plan="team")) == "codex-a@b.c-team.json"
    assert account_file_name(CODEX, AccountIdentity(email="a@b.c")) == "codex-a@b.c.json"
    assert (
        account_file_name(GEMINI, AccountIdentity(email="a@b.c", project_id="proj-1"))
        == "gemini-a@b.c-proj-1.json"
    )
    assert account_file_name(GEMINI, AccountIdentity(email="a@b.c", project_id="ALL")) == "gemini-a@b.c-all.json"


def test_file_name_cannot_escape_directory():
    name = account_file_name(CLAUDE, AccountIdentity(email="../../etc/passwd"))
    assert "/" not in name
    assert not name.startswith(".")


def test_file_name_needs_email():
    with pytest.raises(IdentityError):
        account_file_name(CODEX, AccountIdentity(account_id="acct-1"))
    with pytest.raises(IdentityError):
        account_file_name(GEMINI, AccountIdentity(email="a@b.c"))


def test_merge_login_record_keeps_operator_and_unknown_keys():
    earlier = {
        "type": "gemini",
        "access_token": "old",
        "priority": 3,
        "disabled": True,
        "extra": 1,
        "token": {"access_token": "old", "custom": "kept"},
    }
    record = {"type": "gemini", "disabled": False, "token": {"access_token": "new"}}

    merged = merge_login_record(earlier, record)

    assert merged["priority"] == 3
    assert merged["disabled"] is True
    assert merged["extra"] == 1
    assert merged["token"] == {"access_token": "new", "custom": "kept"}


def test_update_tokens_writes_atomically_0600(tmp_path):
    path = tmp_path / "claude-a@b.c.json"
    mtime = _write(path, {"type": "claude", "access_token": "old", "refresh_token": "old-r", "unknown": [1]})
    os.chmod(path, 0o644)

    result = update_tokens(path, _tokens(), mtime, now=NOW)

    data = json.loads(path.read_text())
    assert result.kept_newer_on_disk is False
    assert data["access_token"] == "new-access"
    assert data["refresh_token"] == "new-refresh"
    assert data["expired"] == "2026-05-01T13:00:00Z"
    assert data["last_refresh"] == "2026-05-01T12:00:00Z"
    assert data["unknown"] == [1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert result.mtime_ns == path.stat().st_mtime_ns


def test_update_tokens_keeps_refresh_token_when_none(tmp_path):
    path = tmp_path / "codex-a@b.c.json"
    mtime = _write(path, {"type": "codex", "access_token": "old", "refresh_token": "keep-me"})

    update_tokens(path, _tokens(refresh=None), mtime, now=NOW)

    assert json.loads(path.read_text())["refresh_token"] == "keep-me"


def test_update_tokens_keeps_newer_token_on_disk(tmp_path):
    path = tmp_path / "claude-a@b.c.json"
    mtime = _write(path, {"type": "claude", "access_token": "old", "refresh_token": "old-r"})
    newer = {
        "type": "claude",
        "access_token": "theirs",
        "refresh_token": "their-r",
        "expired": "2026-05-01T20:00:00Z",
        "note": "other program",
    }
    _bump_mtime(path, newer)

    result = update_tokens(path, _tokens(), mtime, now=NOW)

    assert result.kept_newer_on_disk is True
    assert result.tokens.access_token == "theirs"
    assert json.loads(path.read_text()) == newer


def test_update_tokens_merges_concurrent_field_edits(tmp_path):
    path = tmp_path / "claude-a@b.c.json"
    original = {"type": "claude", "access_token": "old", "refresh_token": "old-r", "expired": "2026-05-01T12:01:00Z"}
    mtime = _write(path, original)
    _bump_mtime(path, {**original, "priority": 7, "disabled": True})

    result = update_tokens(path, _tokens(), mtime, now=NOW)

    data = json.loads(path.read_text())
    assert result.kept_newer_on_disk is False
    assert data["access_token"] == "new-access"
    assert data["priority"] == 7
    assert data["disabled"] is True


def test_update_tokens_gemini_nested(tmp_path):
    path = tmp_path / "gemini-a@b.c-p.json"
    mtime = _write(
        path,
        {
            "type": "gemini",
            "project_id": "p",
            "token": {"access_token": "old", "refresh_token": "r", "expiry": "2026-05-01T12:00:00Z", "custom": 1},
        },
    )

    update_tokens(path, _tokens(refresh=None), mtime, now=NOW)

    token = json.loads(path.read_text())["token"]
    assert token["access_token"] == "new-access"
    assert token["refresh_token"] == "r"
    assert token["expiry"] == "2026-05-01T13:00:00.000000000Z"
    assert token["custom"] == 1


def test_update_tokens_deleted_file(tmp_path):
    path = tmp_path / "claude-a@b.c.json"
    mtime = _write(path, {"type": "claude", "access_token": "old", "refresh_token": "r"})
    path.unlink()

    with pytest.raises(AccountFileMissing):
        update_tokens(path, _tokens(), mtime, now=NOW)
    assert not path.exists()


def test_apply_tokens_codex_updates_identity():
    from tests.fakes.oauth_server import FakeAccount, make_codex_id_token

    id_token = make_codex_id_token(FakeAccount(email="new@b.c", chatgpt_account_id="acct-9"))
    data = {"type": "codex", "email": "old@b.c", "account_id": "acct-1", "refresh_token": "r"}

    updated = apply_tokens(data, _tokens(id_token=id_token), now=NOW)

    assert updated["id_token"] == id_token
    assert updated["account_id"] == "acct-9"
    assert updated["email"] == "new@b.c"
    assert data["account_id"] == "acct-1"


def test_apply_tokens_replaces_other_expiry_keys():
    updated = apply_tokens({"type": "claude", "expires_at": 1}, _tokens(), now=NOW)
    assert "expires_at" not in updated
    assert read_expiry(updated) == NOW + timedelta(hours=1)


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]"])
def test_read_account_file_invalid(tmp_path, content):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(AccountFileInvalid):
        read_account_file(path)


def test_read_account_file_missing(tmp_path):
    with pytest.raises(AccountFileMissing):
        read_account_file(tmp_path / "absent.json")


def test_write_failure_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "claude-a@b.c.json"
    mtime = _write(path, {"type": "claude", "access_token": "old", "refresh_token": "r"})

    def failing_write(target, data, mode=0o600):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(authfiles, "atomic_write", failing_write)
    with pytest.raises(OSError):
        update_tokens(path, _tokens(), mtime, now=NOW)
    assert json.loads(path.read_text())["access_token"] == "old"
