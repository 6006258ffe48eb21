"""Account files: CLIProxyAPI-compatible JSON files holding one OAuth login each.

File names and fields follow CLIProxyAPI so that both programs can share an auth directory:

- `claude-<email>.json`: `type`, `email`, `access_token`, `refresh_token`, `id_token` (empty),
  `expired`, `last_refresh`, `account_uuid`, `organization_uuid`, `organization_name`.
- `codex-<sha256(account_id)[:8]>-<email>-<plan>.json`: `type`, `email`, `id_token`,
  `access_token`, `refresh_token`, `account_id`, `expired`, `last_refresh`.
- `gemini-<email>-<project_id>.json`: `type`, `email`, `project_id`, `auto`, `checked` and a
  nested `token` object (`access_token`, `refresh_token`, `expiry`, `token_uri`, ...).

Files are written atomically with mode 0600. Operators and other programs add their own keys
(`priority`, `prefix`, `disabled`, `note`, ...); every write here keeps keys it does not own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.atomic import atomic_write
from oauth.clock import format_rfc3339, format_rfc3339_nano
from oauth.errors import AccountFileInvalid, AccountFileMissing, IdentityError
from oauth.identity import AccountIdentity, codex_identity_from_id_token
from oauth.providers import Endpoints, ProviderOAuth, get_provider
from oauth.tokens import TokenSet

logger = logging.getLogger(__name__)

MAX_ACCOUNT_FILE_BYTES = 1024 * 1024

# Keys that operators or the management API set. A new login for the same account keeps the
# earlier file's values for these (and for every key the login does not write).
OPERATOR_FIELDS = frozenset(
    {
        "priority",
        "prefix",
        "disabled",
        "note",
        "proxy_url",
        "base_url",
        "excluded_models",
        "weight",
        "websockets",
        "request_retry",
        "disable_cooling",
        "model_aliases",
        "headers",
        "refresh_interval_seconds",
    }
)

# Expiry keys in the order CLIProxyAPI reads them, at the top level and in a nested `token`.
EXPIRY_KEYS = ("expired", "expire", "expires_at", "expiresAt", "expiry", "expires")

# Unix timestamps above this are in milliseconds (10**12 s is in the year 33658).
_MILLISECONDS_THRESHOLD = 10**12

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9@._+-]")

_path_locks: dict[str, threading.Lock] = {}
_path_locks_guard = threading.Lock()


@dataclass(frozen=True)
class AccountFile:
    """One account file as read from disk; `mtime_ns` identifies the version that was read."""

    path: Path
    data: dict[str, Any]
    mtime_ns: int

    @property
    def provider_name(self) -> str:
        """The OAuth provider of the file (`claude`, `codex` or `gemini`)."""
        return get_provider(str(self.data.get("type", ""))).name


@dataclass(frozen=True)
class StoredTokens:
    """The token fields of an account file, wherever the file keeps them."""

    access_token: str | None
    refresh_token: str | None
    expiry: datetime | None

    def __repr__(self) -> str:
        return f"StoredTokens(expiry={self.expiry!r})"


@dataclass(frozen=True)
class TokenUpdate:
    """The result of `update_tokens`.

    `data` and `mtime_ns` describe the file as it is now on disk. `kept_newer_on_disk` is True
    when another program had already written a token that expires later than ours, so the file
    kept that token and ours was discarded.
    """

    data: dict[str, Any]
    mtime_ns: int
    kept_newer_on_disk: bool

    @property
    def tokens(self) -> StoredTokens:
        """The token fields now in the file."""
        return stored_tokens(self.data)


def path_lock(path: Path) -> threading.Lock:
    """Return the in-process lock that serializes writes to `path`."""
    key = str(Path(path).absolute())
    with _path_locks_guard:
        lock = _path_locks.get(key)
        if lock is None:
            lock = threading.Lock()
            _path_locks[key] = lock
        return lock


def read_account_file(path: Path) -> AccountFile:
    """Read an account file.

    Raises AccountFileMissing when the file does not exist and AccountFileInvalid when it is
    too large or not a JSON object.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            if stat.st_size > MAX_ACCOUNT_FILE_BYTES:
                raise AccountFileInvalid(f"account file {path.name} is larger than 1 MiB")
            raw = handle.read()
    except FileNotFoundError:
        raise AccountFileMissing(f"account file {path.name} does not exist") from None
    except OSError as exc:
        raise AccountFileInvalid(f"account file {path.name} cannot be read: {exc}") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise AccountFileInvalid(f"account file {path.name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AccountFileInvalid(f"account file {path.name} must contain a JSON object")
    return AccountFile(path=path, data=data, mtime_ns=stat.st_mtime_ns)


def parse_time(value: Any) -> datetime | None:
    """Parse an expiry value: RFC 3339, `YYYY-MM-DD HH:MM[:SS]`, or unix seconds or milliseconds.

    Strings without a UTC offset are taken as UTC. Returns None for anything else.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > _MILLISECONDS_THRESHOLD else float(value)
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return parse_time(float(text))
    try:
        # fromisoformat reads RFC 3339 (with "Z" and up to nine fractional digits) and the
        # space-separated "YYYY-MM-DD HH:MM[:SS]" form.
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        # NOTE: naive times are assumed to be UTC; no writer known to us produces them.
        moment = moment.replace(tzinfo=UTC)
    return moment


def read_expiry(data: Mapping[str, Any]) -> datetime | None:
    """Return the access token's expiry from any expiry key CLIProxyAPI reads, or None.

    The top-level keys are tried first, then the same keys in a nested `token` object.
    """
    sources: list[Mapping[str, Any]] = [data]
    nested = data.get("token")
    if isinstance(nested, Mapping):
        sources.append(nested)
    for source in sources:
        for key in EXPIRY_KEYS:
            value = source.get(key)
            if value in (None, ""):
                continue
            parsed = parse_time(value)
            if parsed is not None:
                return parsed
    return None


def stored_tokens(data: Mapping[str, Any]) -> StoredTokens:
    """Return the access token, refresh token and expiry of an account file's data."""
    nested = data.get("token")
    nested = nested if isinstance(nested, Mapping) else {}
    access = data.get("access_token") or nested.get("access_token")
    refresh = data.get("refresh_token") or nested.get("refresh_token")
    return StoredTokens(
        access_token=access if isinstance(access, str) and access else None,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        expiry=read_expiry(data),
    )


def account_file_name(provider: ProviderOAuth, identity: AccountIdentity) -> str:
    """Return CLIProxyAPI's file name for a login. Raises IdentityError without an email."""
    email = _name_part(identity.email)
    if provider.name == "claude":
        label = email or _name_part(identity.account_id)
        if not label:
            raise IdentityError("claude login has neither an email nor an account uuid")
        return f"claude-{label}.json"

    if provider.name == "codex":
        account_hash = (
            hashlib.sha256(identity.account_id.encode()).hexdigest()[:8]
            if identity.account_id
            else ""
        )
        plan = re.sub(r"[^a-z0-9]", "-", identity.plan.lower()) if identity.plan else ""
        if not email:
            raise IdentityError("codex id_token has no email claim")
        parts = ["codex", account_hash, email, plan]
        return "-".join(part for part in parts if part) + ".json"

    if provider.name == "gemini":
        if not email:
            raise IdentityError("gemini login has no email")
        project = identity.project_id or ""
        if project.upper() == "ALL" or "," in project:
            project = "all"
        project = _name_part(project)
        if not project:
            raise IdentityError("gemini login has no project id")
        return f"gemini-{email}-{project}.json"

    raise IdentityError(f"no account file name for provider {provider.name!r}")


def build_account_record(
    provider: ProviderOAuth,
    tokens: TokenSet,
    identity: AccountIdentity,
    *,
    endpoints: Endpoints,
    now: datetime,
) -> dict[str, Any]:
    """Return the fields a fresh login writes, in CLIProxyAPI's layout for `provider`."""
    if provider.name == "gemini":
        record: dict[str, Any] = {
            "type": "gemini",
            "email": identity.email,
            "project_id": identity.project_id,
            "auto": identity.project_auto,
            # CLIProxyAPI sets `checked` after verifying that the Cloud AI API is enabled for
            # the project. cliproxy does not check this, so it writes False.
            "checked": False,
            "token": _gemini_token_object(provider, tokens, endpoints, now),
            "disabled": False,
        }
        return record

    record = {"type": provider.name, "email": identity.email}
    if provider.name == "claude":
        record.update(
            {
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token or "",
                "id_token": "",
                "account_uuid": identity.account_id or "",
                "organization_uuid": identity.organization_uuid or "",
                "organization_name": identity.organization_name or "",
            }
        )
    else:
        record.update(
            {
                "id_token": tokens.id_token or "",
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token or "",
                "account_id": identity.account_id or "",
            }
        )
    record["last_refresh"] = format_rfc3339(now)
    if tokens.expiry is not None:
        record["expired"] = format_rfc3339(tokens.expiry)
    record["disabled"] = False
    return record


def merge_login_record(earlier: Mapping[str, Any] | None, record: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a fresh login's record into the earlier file of the same account.

    The login's token and identity fields win. The earlier file's operator fields and every
    key the login does not write are kept, including unknown keys inside a nested `token`.
    """
    if not earlier:
        return dict(record)
    merged = dict(earlier)
    merged.update(record)
    for key in OPERATOR_FIELDS:
        if key in earlier:
            merged[key] = earlier[key]
    earlier_token = earlier.get("token")
    new_token = record.get("token")
    if isinstance(earlier_token, Mapping) and isinstance(new_token, Mapping):
        merged["token"] = {**earlier_token, **new_token}
    return merged


def write_account_file(
    auth_dir: Path,
    provider: ProviderOAuth,
    tokens: TokenSet,
    identity: AccountIdentity,
    *,
    endpoints: Endpoints,
    now: datetime,
) -> Path:
    """Write a fresh login to its account file in `auth_dir` and return the file's path.

    An earlier file with the same name (the same account) is merged, see `merge_login_record`.
    """
    auth_dir = Path(auth_dir)
    path = auth_dir / account_file_name(provider, identity)
    record = build_account_record(provider, tokens, identity, endpoints=endpoints, now=now)
    with path_lock(path):
        earlier: dict[str, Any] | None = None
        try:
            earlier = read_account_file(path).data
        except AccountFileMissing:
            earlier = None
        except AccountFileInvalid as exc:
            logger.warning("replacing unreadable account file %s: %s", path.name, exc)
        merged = merge_login_record(earlier, record)
        _write_json(path, merged)
    logger.info("saved %s login for %s to %s", provider.name, identity.email, path.name)
    return path


def apply_tokens(
    data: Mapping[str, Any], tokens: TokenSet, *, now: datetime
) -> dict[str, Any]:
    """Return a copy of an account file's data with a refreshed TokenSet written in.

    A refresh response without a refresh token keeps the stored one. For Codex, a new id token
    also updates `account_id` and `email` from its claims.
    """
    updated = dict(data)
    provider = get_provider(str(data.get("type", "")))
    if provider.name == "gemini" or isinstance(data.get("token"), Mapping):
        token = dict(data.get("token") or {})
        token["access_token"] = tokens.access_token
        if tokens.refresh_token:
            token["refresh_token"] = tokens.refresh_token
        token["token_type"] = tokens.token_type
        if tokens.expiry is not None:
            token["expiry"] = format_rfc3339_nano(tokens.expiry)
            token.pop("expires_in", None)
        updated["token"] = token
        return updated

    updated["access_token"] = tokens.access_token
    if tokens.refresh_token:
        updated["refresh_token"] = tokens.refresh_token
    if tokens.expiry is not None:
        for key in EXPIRY_KEYS:
            updated.pop(key, None)
        updated["expired"] = format_rfc3339(tokens.expiry)
    updated["last_refresh"] = format_rfc3339(now)
    if provider.name == "codex" and tokens.id_token:
        updated["id_token"] = tokens.id_token
        try:
            identity = codex_identity_from_id_token(tokens.id_token)
        except IdentityError as exc:
            logger.warning("refreshed codex id_token is unreadable: %s", exc)
        else:
            if identity.account_id:
                updated["account_id"] = identity.account_id
            if identity.email:
                updated["email"] = identity.email
    return updated


def update_tokens(
    path: Path,
    tokens: TokenSet,
    expected_mtime_ns: int,
    *,
    now: datetime,
) -> TokenUpdate:
    """Write refreshed tokens into an existing account file without losing others' changes.

    `expected_mtime_ns` is the mtime of the version the refresh started from. The file is
    re-read under the path lock and the tokens are merged into what is on disk now, so keys
    that others set meanwhile survive. When the file changed since that version and now
    contains a token that expires later than `tokens`, another program refreshed first: its
    token wins and nothing is written.
    Raises AccountFileMissing when the file was deleted; it is never recreated.

    NOTE: the lock is per process. Another program that writes between the re-read and the
    rename loses its change; the window is one read plus one write.
    """
    path = Path(path)
    with path_lock(path):
        current = read_account_file(path)
        if current.mtime_ns != expected_mtime_ns:
            on_disk = read_expiry(current.data)
            if on_disk is not None and (tokens.expiry is None or on_disk > tokens.expiry):
                logger.info(
                    "kept the newer token that another program wrote to %s", path.name
                )
                return TokenUpdate(current.data, current.mtime_ns, kept_newer_on_disk=True)
        updated = apply_tokens(current.data, tokens, now=now)
        mtime_ns = _write_json(path, updated)
    return TokenUpdate(updated, mtime_ns, kept_newer_on_disk=False)


def _write_json(path: Path, data: Mapping[str, Any]) -> int:
    payload = json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
    atomic_write(path, payload, mode=0o600)
    return path.stat().st_mtime_ns


def _gemini_token_object(
    provider: ProviderOAuth, tokens: TokenSet, endpoints: Endpoints, now: datetime
) -> dict[str, Any]:
    token: dict[str, Any] = {
        "access_token": tokens.access_token,
        "token_type": tokens.token_type,
        "refresh_token": tokens.refresh_token or "",
    }
    if tokens.expiry is not None:
        token["expiry"] = format_rfc3339_nano(tokens.expiry)
        token["expires_in"] = max(int((tokens.expiry - now).total_seconds()), 0)
    token.update(
        {
            "token_uri": endpoints.token_url,
            "client_id": provider.client_id,
            "client_secret": provider.client_secret,
            "scopes": list(provider.scopes),
            "universe_domain": "googleapis.com",
        }
    )
    return token


def _name_part(value: str | None) -> str:
    if not value:
        return ""
    cleaned = _UNSAFE_NAME_CHARS.sub("-", value.strip())
    return cleaned.lstrip(".")
