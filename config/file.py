"""Reading, creating and editing config.yaml without losing the user's comments.

Edits go through `ConfigFile.update()`: it takes an exclusive lock (a thread lock plus an
`flock` on a sidecar file, so a CLI command and the running proxy do not interleave), re-reads
the file, applies the change to the round-trip YAML document (ruamel.yaml keeps comments, key
order and unknown keys), validates the result, and replaces the file atomically with mode 0600.
A change that would produce an invalid config is rejected and the file stays as it was.
"""

import fcntl
import hashlib
import io
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from config.atomic import atomic_write
from config.defaults import DEFAULT_AUTH_DIR, example_config_text
from config.errors import ConfigError
from config.schema import Config, parse_config

logger = logging.getLogger(__name__)

ENV_CONFIG = "CLIPROXY_CONFIG"


def resolve_config_path(option_value: str = "") -> Path:
    """Pick the config path: the option, else `$CLIPROXY_CONFIG`, else ~/.cli-proxy-api."""
    if option_value:
        return Path(option_value).expanduser().resolve()
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG]).expanduser().resolve()
    return Path(DEFAULT_AUTH_DIR).expanduser() / "config.yaml"


def generate_proxy_key() -> str:
    """Return a new proxy key: "sk-" and 48 hex characters from `secrets`."""
    return "sk-" + secrets.token_hex(24)


def _round_trip_yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


class ConfigFile:
    """One config.yaml on disk, with serialised, atomic, comment-preserving edits."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.lock")

    def ensure_exists(self) -> str | None:
        """Create the file on first start with one generated proxy key.

        Returns the generated key when the file was created, else None.
        """
        with self.locked():
            if self.path.exists():
                return None
            key = generate_proxy_key()
            text = example_config_text().replace("__GENERATED_KEY__", key)
            atomic_write(self.path, text.encode("utf-8"))
            logger.info("created config file %s", self.path)
            return key

    def read_text(self) -> str:
        try:
            return self.path.read_text("utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"config file {self.path} not found; start cliproxy once to create it"
            ) from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {self.path} cannot be read: {error}") from error

    def fingerprint(self) -> str | None:
        """Return a digest of the file's bytes, or None when it is missing."""
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except FileNotFoundError:
            return None

    def load(self) -> Config:
        """Read and validate the file."""
        return self.parse_text(self.read_text())

    def parse_text(self, text: str) -> Config:
        """Validate YAML text as a config for this path, without writing anything.

        An empty document is invalid: editors truncate a file before writing it, and applying
        that moment's content would drop every proxy key and account.
        """
        document = self._parse_document(text)
        if document is None:
            raise ConfigError(
                f"config file {self.path} is empty; write the configuration into it "
                "(cliproxy creates a commented one when the file is missing)"
            )
        return parse_config(document, self.path)

    def update(self, mutate: Callable[[Any], None]) -> Config:
        """Apply `mutate` to the YAML document and write the result atomically.

        `mutate` receives the round-trip document (a dict-like CommentedMap) and changes it in
        place. The new content is validated before it replaces the file.
        """
        with self.locked():
            document = self._parse_document(self.read_text())
            if document is None:
                document = _round_trip_yaml().load("{}\n")
            mutate(document)
            config = parse_config(document, self.path)
            self._write_document(document)
            return config

    def replace_text(self, text: str) -> Config:
        """Replace the whole file with `text` after validating it."""
        with self.locked():
            config = self.parse_text(text)
            atomic_write(self.path, text.encode("utf-8"))
            return config

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the in-process lock and an exclusive `flock` on the sidecar lock file."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _parse_document(self, text: str) -> Any:
        try:
            return _round_trip_yaml().load(text)
        except YAMLError as error:
            raise ConfigError(f"config file {self.path} is not valid YAML: {error}") from error

    def _write_document(self, document: Any) -> None:
        buffer = io.StringIO()
        _round_trip_yaml().dump(document, buffer)
        text = buffer.getvalue()
        # ruamel.yaml can emit text it cannot read back (e.g. a commented list emptied in
        # place); such a result must never replace a working file.
        self.parse_text(text)
        atomic_write(self.path, text.encode("utf-8"))
