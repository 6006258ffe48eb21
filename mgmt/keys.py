"""Management key: the accepted sources, verification, and the generated key's storage.

A presented key is accepted when it matches any of:

- config `remote-management.secret-key`: a bcrypt hash (`$2a$`, `$2b$`, `$2y$`, as written by
  CLIProxyAPI or by cliproxy) or a plaintext value that has not been hashed yet;
- env `MANAGEMENT_PASSWORD`;
- the key cliproxy generates on first run, kept in the OS keyring (service `cliproxy`,
  account `management-key`) or, where no keyring backend exists, in a 0600 file
  `management-key` beside the config file.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import bcrypt
import keyring
import keyring.backend
import keyring.errors

from config.atomic import atomic_write

logger = logging.getLogger(__name__)

BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
# Go's bcrypt.DefaultCost, which CLIProxyAPI uses; about 50 ms per check on a laptop core.
BCRYPT_COST = 10
# bcrypt only reads the first 72 bytes, and the bcrypt package (5.x) rejects longer inputs.
BCRYPT_MAX_BYTES = 72

ENV_PASSWORD = "MANAGEMENT_PASSWORD"
KEYRING_SERVICE = "cliproxy"
KEYRING_ACCOUNT = "management-key"
KEY_FILE_NAME = "management-key"

_VERIFIED_CACHE_SIZE = 64


def is_bcrypt_hash(value: str) -> bool:
    """Return True when `value` looks like a bcrypt hash rather than a plaintext key."""
    return value.startswith(BCRYPT_PREFIXES)


def hash_key(plaintext: str) -> str:
    """Return the bcrypt hash of `plaintext` at CLIProxyAPI's cost.

    Raises ValueError for keys longer than 72 bytes, which bcrypt cannot hash without
    silently truncating them.
    """
    raw = plaintext.encode()
    if len(raw) > BCRYPT_MAX_BYTES:
        raise ValueError(
            f"remote-management.secret-key is {len(raw)} bytes long; bcrypt accepts at most "
            f"{BCRYPT_MAX_BYTES}: use a shorter key"
        )
    return bcrypt.hashpw(raw, bcrypt.gensalt(BCRYPT_COST)).decode()


def generate_key() -> str:
    """Return a new random management key (256 bits, URL-safe base64)."""
    return secrets.token_urlsafe(32)


def _keyring_is_usable(backend: keyring.backend.KeyringBackend) -> bool:
    """Return False for keyring's fail and null backends, which store nothing."""
    name = f"{type(backend).__module__}.{type(backend).__qualname__}"
    if name in ("keyring.backends.fail.Keyring", "keyring.backends.null.Keyring"):
        return False
    backends = getattr(backend, "backends", None)
    if backends is not None:  # keyring's ChainerBackend
        return any(_keyring_is_usable(b) for b in backends)
    return True


class GeneratedKeyStore:
    """The generated management key: in the OS keyring, else in a 0600 file.

    `backend` defaults to keyring's configured backend (`PYTHON_KEYRING_BACKEND` selects
    another one, e.g. `keyring.backends.fail.Keyring` to force the file).
    """

    _file_fallback_logged = False
    _lock = threading.Lock()

    def __init__(
        self, config_dir: Path, backend: keyring.backend.KeyringBackend | None = None
    ) -> None:
        self.key_file = Path(config_dir) / KEY_FILE_NAME
        self._backend = backend

    def _keyring(self) -> keyring.backend.KeyringBackend | None:
        backend = self._backend or keyring.get_keyring()
        return backend if _keyring_is_usable(backend) else None

    def load(self) -> str | None:
        """Return the stored key, or None when none was generated yet."""
        backend = self._keyring()
        if backend is not None:
            try:
                stored = backend.get_password(KEYRING_SERVICE, KEYRING_ACCOUNT)
            except keyring.errors.KeyringError as exc:
                logger.warning("reading the management key from the OS keyring failed: %s", exc)
            else:
                if stored:
                    return stored
        return self._read_file()

    def load_or_create(self) -> str:
        """Return the stored key, generating and storing one on first use."""
        with self._lock:
            existing = self.load()
            if existing:
                return existing
            key = generate_key()
            self._store(key)
            return key

    def rotate(self) -> str:
        """Replace the stored key with a new one and return it."""
        with self._lock:
            key = generate_key()
            self._store(key)
            return key

    def _store(self, key: str) -> None:
        backend = self._keyring()
        if backend is not None:
            try:
                backend.set_password(KEYRING_SERVICE, KEYRING_ACCOUNT, key)
                logger.info(
                    "generated a management key and stored it in the OS keyring "
                    "(service %r, account %r); `cliproxy management-key` prints it",
                    KEYRING_SERVICE,
                    KEYRING_ACCOUNT,
                )
                return
            except keyring.errors.KeyringError as exc:
                logger.warning("storing the management key in the OS keyring failed: %s", exc)
        atomic_write(self.key_file, (key + "\n").encode(), mode=0o600)
        self._log_file_fallback()

    def _log_file_fallback(self) -> None:
        cls = type(self)
        if cls._file_fallback_logged:
            return
        cls._file_fallback_logged = True
        logger.info(
            "no OS keyring backend available: the management key is kept in %s (mode 0600); "
            "`cliproxy management-key` prints it",
            self.key_file,
        )

    def _read_file(self) -> str | None:
        try:
            mode = self.key_file.stat().st_mode
        except FileNotFoundError:
            return None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning(
                "%s was readable by other users; setting its mode to 0600", self.key_file
            )
            os.chmod(self.key_file, 0o600)
        key = self.key_file.read_text("utf-8").strip()
        self._log_file_fallback()
        return key or None


class ManagementKeys:
    """Verifies presented management keys against every accepted source.

    `secret_key` returns the current `remote-management.secret-key` (hash, plaintext or "")
    each time, so config reloads apply without rebuilding this object. Verified bcrypt
    results are cached under an HMAC digest of the presented key with a per-process random
    key, so the cache contains no key, and the ~50 ms bcrypt cost is paid once per key.
    """

    def __init__(
        self,
        secret_key: Callable[[], str],
        env_password: str | None = None,
        generated_key: str | None = None,
    ) -> None:
        self._secret_key = secret_key
        self._env_password = (env_password or "").strip() or None
        self._generated_key = generated_key or None
        self._digest_key = secrets.token_bytes(32)
        self._verified: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_environment(
        cls, secret_key: Callable[[], str], store: GeneratedKeyStore
    ) -> ManagementKeys:
        """Build the verifier from env `MANAGEMENT_PASSWORD` and the generated key store."""
        return cls(secret_key, os.environ.get(ENV_PASSWORD), store.load_or_create())

    def _digest(self, presented: str) -> bytes:
        return hmac.new(self._digest_key, presented.encode(), hashlib.sha256).digest()

    def verify(self, presented: str) -> bool:
        """Return True when `presented` matches any source; comparisons are constant-time."""
        if not presented:
            return False
        raw = presented.encode()
        matched = False
        for plain in (self._env_password, self._generated_key):
            if plain is not None and hmac.compare_digest(raw, plain.encode()):
                matched = True
        if matched:
            return True

        secret = self._secret_key()
        if not secret:
            return False
        if not is_bcrypt_hash(secret):
            return hmac.compare_digest(raw, secret.encode())
        return self._verify_bcrypt(secret, presented)

    def _verify_bcrypt(self, hashed: str, presented: str) -> bool:
        cache_key = (hashed, self._digest(presented))
        with self._lock:
            if cache_key in self._verified:
                self._verified.move_to_end(cache_key)
                return True
        try:
            matched = bcrypt.checkpw(presented.encode(), hashed.encode())
        except ValueError:
            # Longer than 72 bytes, or a malformed hash in the config: no match.
            return False
        if matched:
            with self._lock:
                self._verified[cache_key] = None
                while len(self._verified) > _VERIFIED_CACHE_SIZE:
                    self._verified.popitem(last=False)
        return matched


def extract_presented_key(headers: Mapping[str, str]) -> str:
    """Return the management key from `Authorization: Bearer` or `X-Management-Key`.

    `headers` maps lower-case names to values. As in CLIProxyAPI, an Authorization value
    without a scheme is taken whole. Returns "" when no key is present.
    """
    authorization = (headers.get("authorization") or "").strip()
    if authorization:
        scheme, _, rest = authorization.partition(" ")
        if not rest:
            return scheme
        if scheme.lower() == "bearer":
            return rest.strip()
    return (headers.get("x-management-key") or "").strip()


def read_management_key(config_path: Path) -> str:
    """Return the generated management key for `config_path`, generating it on first use.

    This is what `cliproxy management-key` prints. It never returns a key from the config or
    the environment, because those are the user's own and are not stored in a readable form.
    """
    return GeneratedKeyStore(Path(config_path).parent).load_or_create()
