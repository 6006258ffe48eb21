"""The shared runtime: configuration, proxy keys and the account pool of one cliproxy process.

Every addon receives the same `Runtime`. It loads config.yaml, builds the pool from the config
and the auth directory, and keeps both current: `watch()` polls the config file and the auth
directory every second and applies changes live. A broken edit is logged and the last good
configuration stays in force.
"""

import asyncio
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from config import Config, ConfigError, ConfigFile
from pool import AccountPool, load_accounts
from pool.loader import AuthFileProblem
from addons.tokens import TokenKeeper
from store.applog import AppLogHandler
from store.metrics import Metrics
from store.records import key_fingerprint
from store.redact import Redactor
from store.request_log import RequestLogWriter
from store.usage_store import UsageStore

logger = logging.getLogger(__name__)

WATCH_INTERVAL_SECONDS = 1.0


class ProxyKeys:
    """The configured proxy keys, compared in constant time through their SHA-256 digests."""

    def __init__(self, keys: tuple[str, ...] = ()) -> None:
        self._entries = [
            (hashlib.sha256(key.encode("utf-8")).digest(), key_fingerprint(key)) for key in keys
        ]

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, candidate: str) -> str | None:
        """Return the label of the key equal to `candidate`, or None.

        Every configured digest is compared, so the time taken does not depend on which key
        matched or how much of it did.
        """
        digest = hashlib.sha256(candidate.encode("utf-8")).digest()
        found = None
        for key_digest, label in self._entries:
            if hmac.compare_digest(digest, key_digest):
                found = label
        return found


@dataclass(frozen=True)
class DirectorySignature:
    """Names, sizes and modification times of the auth files: a cheap change detector."""

    entries: tuple[tuple[str, int, int], ...]

    @classmethod
    def of(cls, directory: Path) -> "DirectorySignature":
        entries = []
        try:
            with os.scandir(directory) as scan:
                for entry in scan:
                    if entry.name.endswith(".json") and not entry.name.startswith("."):
                        try:
                            stat = entry.stat()
                        except FileNotFoundError:
                            continue
                        entries.append((entry.name, stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            pass
        return cls(tuple(sorted(entries)))


class Runtime:
    """Configuration, keys and pool for one proxy process."""

    def __init__(self, config_file: ConfigFile) -> None:
        self.config_file = config_file
        self.config: Config | None = None
        self.proxy_keys = ProxyKeys()
        self.pool = AccountPool()
        self.tokens = TokenKeeper(self.pool)
        self.auth_problems: list[AuthFileProblem] = []
        self.listeners: list[Callable[[Config], None]] = []
        # Called after every account reload, also when only the auth directory changed.
        self.account_listeners: list[Callable[[], None]] = []
        # The request log tap's shared parts (see addons/tap.py). The tap opens the usage
        # store and the request log writer when the first config is applied.
        self.redactor = Redactor()
        self.app_log = AppLogHandler(self.redactor)
        self.metrics = Metrics()
        self.usage_store: UsageStore | None = None
        self.request_log: RequestLogWriter | None = None
        self._config_fingerprint: str | None = None
        self._auth_signature: DirectorySignature | None = None
        # Management requests apply config changes from worker threads while the event
        # loop's watcher may reload the same files.
        self._lock = threading.RLock()

    @property
    def cfg(self) -> Config:
        """The current configuration; only valid after `load()`."""
        assert self.config is not None, "Runtime.load() has not run"
        return self.config

    def load(self) -> None:
        """Load the config (raising ConfigError) and the accounts."""
        fingerprint = self.config_file.fingerprint()
        config = self.config_file.load()
        self.apply(config)
        self._config_fingerprint = fingerprint

    def apply(self, config: Config) -> None:
        """Make `config` the live configuration: keys, strategy, accounts and listeners."""
        with self._lock:
            self._apply(config)

    def _apply(self, config: Config) -> None:
        self.config = config
        self.proxy_keys = ProxyKeys(config.api_keys)
        self.pool.strategy = config.routing_strategy
        self.tokens.configure(config)
        self.reload_accounts()
        for listener in list(self.listeners):
            try:
                listener(config)
            except Exception:
                logger.exception("config listener %r failed", listener)

    def update_config(self, mutate: Callable[[object], None]) -> Config:
        """Edit config.yaml through `mutate` (see ConfigFile.update) and apply it live."""
        with self._lock:
            config = self.config_file.update(mutate)
            self._config_fingerprint = self.config_file.fingerprint()
            self.apply(config)
            return config

    def replace_config_text(self, text: str) -> Config:
        """Validate `text` as a whole config.yaml, write it, and apply it live."""
        with self._lock:
            config = self.config_file.replace_text(text)
            self._config_fingerprint = self.config_file.fingerprint()
            self.apply(config)
            return config

    def reload_accounts(self) -> None:
        with self._lock:
            self._reload_accounts()

    def _reload_accounts(self) -> None:
        config = self.cfg
        signature = DirectorySignature.of(config.auth_dir)
        accounts, problems = load_accounts(config)
        for problem in problems:
            logger.warning("auth file %s skipped: %s", problem.path.name, problem.message)
        self.auth_problems = problems
        self.pool.set_accounts(accounts)

        # An account in the error state (e.g. a rejected refresh token) gets another chance
        # once its file changes.
        previous = set(self._auth_signature.entries) if self._auth_signature else set()
        for name, _size, _mtime in set(signature.entries) - previous:
            self.pool.clear_error(f"file:{name}")
        self._auth_signature = signature
        self.tokens.wake()
        logger.debug("pool has %d accounts", len(accounts))
        for listener in list(self.account_listeners):
            try:
                listener()
            except Exception:
                logger.exception("account listener %r failed", listener)

    def check_for_changes(self) -> None:
        """Reload what changed on disk since the last check."""
        with self._lock:
            self._check_for_changes()

    def _check_for_changes(self) -> None:
        fingerprint = self.config_file.fingerprint()
        if fingerprint is not None and fingerprint != self._config_fingerprint:
            self._config_fingerprint = fingerprint
            try:
                config = self.config_file.load()
            except ConfigError as error:
                logger.error("config change ignored, keeping the last good config: %s", error)
            else:
                logger.info("config file changed; applied the new configuration")
                self.apply(config)
                return

        if self.config is not None:
            signature = DirectorySignature.of(self.cfg.auth_dir)
            if signature != self._auth_signature:
                logger.info("auth directory changed; reloading accounts")
                self.reload_accounts()

    async def watch(self) -> None:
        """Poll for config and auth file changes until cancelled."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL_SECONDS)
            try:
                self.check_for_changes()
            except Exception:
                logger.exception("checking the config and auth files for changes failed")
