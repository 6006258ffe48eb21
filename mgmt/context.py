"""Interfaces between the management handlers and the running proxy, kept small and typed.

The addon builds one `MgmtContext` from the proxy's runtime; tests build one from a
config file in a temporary directory. Handlers see only this module's types.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict

from config import Config, ConfigFile
from mgmt.keys import ManagementKeys
from mgmt.oauth_callback import CallbackListeners
from oauth.flow import LoginRegistry
from pool import Account, AccountPool, AuthFileProblem, Family
from store.statistics import empty_snapshot

logger = logging.getLogger(__name__)


# One page of application log lines, as `GET /logs` returns it. The functional form is needed
# because the keys contain dashes.
LogLines = TypedDict("LogLines", {"lines": list[str], "line-count": int, "latest-timestamp": int})


class LogSource(Protocol):
    """The application log kept by the proxy (the store's log handler implements it)."""

    def lines_after(self, after: int | None = None, limit: int | None = None) -> LogLines:
        """Return `{"lines", "line-count", "latest-timestamp"}` for lines newer than `after`.

        `after` is a Unix timestamp in seconds (None: from the start). `limit` keeps only the
        newest `limit` lines (None: all).
        """
        ...

    def clear(self) -> int:
        """Drop every kept line and return how many were dropped."""
        ...


class UsageSource(Protocol):
    """Aggregated usage numbers; `store.usage_store.UsageStore` implements it."""

    def aggregate(self) -> Mapping[str, Any]:
        """Return `{"usage": snapshot, "failed_requests": n}` as `GET /usage` sends it.

        The snapshot has CLIProxyAPI v6's keys: `total_requests`, `success_count`,
        `failure_count`, `total_tokens`, `input_tokens`, `output_tokens`, `apis`,
        `requests_by_day`, `requests_by_hour`, `tokens_by_day`, `tokens_by_hour`.
        """
        ...


class NoUsage:
    """Usage source of a proxy without a usage store: every counter is zero."""

    def aggregate(self) -> Mapping[str, Any]:
        return {"usage": empty_usage_snapshot(), "failed_requests": 0}


def empty_usage_snapshot() -> dict[str, Any]:
    """Return a usage snapshot with zero counters and empty breakdowns."""
    return empty_snapshot()


class ConfigAccess:
    """The live config and its file: edits are validated, written, then applied live.

    `edit(mutate)` and `replace_text(text)` must write the file and make the result the
    proxy's live config before they return, so a change applies at once instead of waiting
    for the file watcher. Both raise config.ConfigError for an invalid result and leave the
    file unchanged then.
    """

    def __init__(
        self,
        file: ConfigFile,
        current: Callable[[], Config],
        edit: Callable[[Callable[[Any], None]], Config],
        replace_text: Callable[[str], Config],
    ) -> None:
        self.file = file
        self.current = current
        self.edit = edit
        self.replace_text = replace_text

    @classmethod
    def standalone(cls, file: ConfigFile) -> ConfigAccess:
        """Build access to a config file with no proxy behind it (tests, console commands)."""
        holder: dict[str, Config] = {"config": file.load()}
        lock = threading.Lock()

        def keep(config: Config) -> Config:
            with lock:
                holder["config"] = config
            return config

        return cls(
            file,
            lambda: holder["config"],
            lambda mutate: keep(file.update(mutate)),
            lambda text: keep(file.replace_text(text)),
        )


@dataclass
class MgmtContext:
    """Everything the management handlers use.

    `pool` is None in a process without a pool (console commands). `reload_accounts`
    re-reads the auth directory into the pool after a file changed, and `auth_problems`
    returns the files that reload skipped, with the reason. `model_catalog`
    returns the default model ids per family for accounts without a `models` list.
    `release_url` is the GitHub-style "latest release" JSON URL that `GET /latest-version`
    reads; empty disables the route. `logins` returns the OAuth login registry, None where
    logins are unavailable. `oauth_redirects` opens the localhost redirect listeners for
    logins started with `is_webui=true`. `fresh_token` returns an OAuth account's access
    token, refreshing it first when it has expired; without it the pool's token is used.
    """

    config: ConfigAccess
    keys: ManagementKeys
    pool: AccountPool | None = None
    reload_accounts: Callable[[], None] = lambda: None
    auth_problems: Callable[[], list[AuthFileProblem]] = list
    usage: UsageSource = field(default_factory=NoUsage)
    logs: LogSource | None = None
    model_catalog: Callable[[], Mapping[Family, tuple[str, ...]]] = lambda: {}
    release_url: str = ""
    request_log_dir: Callable[[], Path] | None = None
    logins: Callable[[], LoginRegistry | None] | None = None
    oauth_redirects: CallbackListeners | None = None
    fresh_token: Callable[[Account], str] | None = None

    def account_for_file(self, path: Path) -> Account | None:
        """Return the pool's account loaded from auth file `path`, if the pool has one."""
        if self.pool is None:
            return None
        for account in self.pool.accounts():
            if account.path is not None and account.path.name == path.name:
                return account
        return None

    def logs_dir(self) -> Path:
        """Return the directory of request and error log files."""
        if self.request_log_dir is not None:
            return self.request_log_dir()
        return self.config.current().directory / "logs"
