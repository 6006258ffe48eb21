"""Building the account list from the config's API-key entries and the auth directory.

Auth files use CLIProxyAPI's format: a JSON object with `type` (`claude`, `codex`, `gemini`),
`email`, `access_token`, `refresh_token`, `expired`, `id_token`, `account_id`, `project_id`,
`disabled`, `priority`, `prefix`, `proxy_url`, `base_url`. Gemini CLI files keep the tokens in
a nested `token` object. Files of other types are skipped, with one log line each.
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from config import Config
from pool.account import Account, UpstreamKind

logger = logging.getLogger(__name__)

MAX_AUTH_FILE_BYTES = 1024 * 1024

_EXPIRY_KEYS = ("expired", "expire", "expires_at", "expiresAt", "expiry", "expires")


@dataclass(frozen=True)
class AuthFileProblem:
    """An auth file that could not become an account, and why."""

    path: Path
    message: str


def short_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def auth_index(kind: str, path: Path) -> str:
    """Return CLIProxyAPI's auth index: 16 hex chars of sha256("<type>:<absolute path>")."""
    return hashlib.sha256(f"{kind}:{path.resolve()}".encode()).hexdigest()[:16]


def load_accounts(config: Config) -> tuple[list[Account], list[AuthFileProblem]]:
    """Return the accounts of the config and auth directory, and the files that failed."""
    accounts = config_accounts(config)
    file_accounts, problems = auth_dir_accounts(config)
    return accounts + file_accounts, problems


def config_accounts(config: Config) -> list[Account]:
    """Return one account per API-key entry and per OpenAI-compatible key."""
    accounts: list[Account] = []
    upstreams = config.upstream_base_urls

    for entry in config.claude_api_keys:
        # Claude Code OAuth tokens pasted as API keys authenticate with Bearer.
        kind = UpstreamKind.CLAUDE_OAUTH if "sk-ant-oat" in entry.api_key else UpstreamKind.CLAUDE_KEY
        accounts.append(_entry_account(entry, kind, entry.base_url or upstreams["claude"]))
    for entry in config.codex_api_keys:
        accounts.append(
            _entry_account(entry, UpstreamKind.CODEX_KEY, entry.base_url or upstreams["openai"])
        )
    for entry in config.gemini_api_keys:
        accounts.append(
            _entry_account(entry, UpstreamKind.GEMINI_KEY, entry.base_url or upstreams["gemini"])
        )

    for provider in config.openai_compatibility:
        for key_index, key in enumerate(provider.api_keys):
            digest = short_digest(f"{provider.name}|{provider.base_url}|{key.api_key}")
            accounts.append(
                Account(
                    id=f"openai-compatibility:{provider.name}:{digest}",
                    label=f"{provider.name}#{key_index}",
                    kind=UpstreamKind.OPENAI_COMPAT,
                    secret=key.api_key,
                    base_url=provider.base_url,
                    source="config",
                    headers=dict(provider.headers),
                    proxy_url=key.proxy_url,
                    models=provider.models,
                    excluded_models=provider.excluded_models,
                    priority=provider.priority,
                    prefix=provider.prefix,
                    disabled=provider.disabled,
                )
            )
    return accounts


def _entry_account(entry: Any, kind: UpstreamKind, base_url: str) -> Account:
    digest = short_digest(f"{entry.section}|{entry.base_url}|{entry.api_key}")
    return Account(
        id=f"{entry.section}:{digest}",
        label=f"{entry.section}#{entry.index}",
        kind=kind,
        secret=entry.api_key,
        base_url=base_url.rstrip("/"),
        source="config",
        headers=dict(entry.headers),
        proxy_url=entry.proxy_url,
        models=entry.models,
        excluded_models=entry.excluded_models,
        priority=entry.priority,
        prefix=entry.prefix,
        # An excluded-models entry of "*" is CLIProxyAPI's way to disable an API key.
        disabled="*" in entry.excluded_models,
    )


def auth_dir_accounts(config: Config) -> tuple[list[Account], list[AuthFileProblem]]:
    """Return the accounts of `*.json` files directly inside the auth directory."""
    accounts: list[Account] = []
    problems: list[AuthFileProblem] = []
    try:
        paths = sorted(config.auth_dir.glob("*.json"))
    except OSError as error:
        logger.warning("cannot list auth directory %s: %s", config.auth_dir, error)
        return accounts, problems

    for path in paths:
        if path.name.startswith("."):
            continue
        try:
            account = account_from_file(path, config)
        except AuthFileError as error:
            problems.append(AuthFileProblem(path, str(error)))
            continue
        if account is not None:
            accounts.append(account)
    return accounts, problems


class AuthFileError(ValueError):
    """An auth file that is not usable (unreadable, not JSON, missing a token)."""


def read_auth_file(path: Path) -> dict[str, Any]:
    """Read an auth file as a JSON object."""
    try:
        if path.stat().st_size > MAX_AUTH_FILE_BYTES:
            raise AuthFileError(f"{path.name} is larger than 1 MiB")
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise AuthFileError(f"{path.name} cannot be read as JSON: {error}") from error
    if not isinstance(data, dict):
        raise AuthFileError(f"{path.name} must contain a JSON object")
    return data


def account_from_file(path: Path, config: Config) -> Account | None:
    """Build the account of one auth file; None for provider types cliproxy does not serve."""
    data = read_auth_file(path)
    file_type = str(data.get("type", "")).lower()
    upstreams = config.upstream_base_urls

    token_data = data.get("token") if isinstance(data.get("token"), dict) else {}
    access_token = data.get("access_token") or token_data.get("access_token") or ""
    refresh_token = data.get("refresh_token") or token_data.get("refresh_token") or ""

    if file_type == "claude":
        kind, base_url = UpstreamKind.CLAUDE_OAUTH, upstreams["claude"]
    elif file_type == "codex":
        kind, base_url = UpstreamKind.CODEX_OAUTH, upstreams["codex"]
    elif file_type in ("gemini", "gemini-cli"):
        kind, base_url = UpstreamKind.GEMINI_CLI, upstreams["gemini-cli"]
    else:
        logger.info("skipping auth file %s: type %r is not served by cliproxy", path.name, file_type)
        return None

    if not access_token and not refresh_token:
        raise AuthFileError(f"{path.name} has neither access_token nor refresh_token")

    return Account(
        id=f"file:{path.name}",
        label=path.name,
        kind=kind,
        secret=str(access_token),
        base_url=str(data.get("base_url") or base_url).rstrip("/"),
        source="file",
        path=path,
        proxy_url=str(data.get("proxy_url") or ""),
        priority=_int_or_zero(data.get("priority")),
        prefix=str(data.get("prefix") or "").strip("/"),
        disabled=data.get("disabled") is True,
        excluded_models=tuple(
            str(item) for item in data.get("excluded_models") or () if isinstance(item, str)
        ),
        email=str(data.get("email") or ""),
        account_id=str(data.get("account_id") or ""),
        project_id=str(data.get("project_id") or ""),
        refresh_token=str(refresh_token),
        expires_at=expiry_timestamp(data),
        data=data,
    )


def _int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def expiry_timestamp(data: dict[str, Any]) -> float | None:
    """Return the access token's expiry as epoch seconds, from any key CLIProxyAPI writes."""
    sources = [data]
    if isinstance(data.get("token"), dict):
        sources.append(data["token"])
    for source in sources:
        for key in _EXPIRY_KEYS:
            value = source.get(key)
            if value in (None, ""):
                continue
            parsed = _parse_time(value)
            if parsed is not None:
                return parsed
    return None


def _parse_time(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # Unix seconds, or milliseconds for values past the year 33658.
        return value / 1000 if value > 10**12 else float(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.isdigit():
        return _parse_time(int(text))
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    for layout in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return datetime.strptime(text, layout).timestamp()
        except ValueError:
            continue
    return None
