"""Management key sources, bcrypt verification and its cache, and the generated key's storage."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import bcrypt
import keyring.backends.fail
import pytest
from ruamel.yaml import YAML

from config import ConfigFile
from mgmt import keys as keys_module
from mgmt.context import ConfigAccess
from mgmt.keys import (
    GeneratedKeyStore,
    ManagementKeys,
    extract_presented_key,
    hash_key,
    is_bcrypt_hash,
    read_management_key,
)
from mgmt.service import SecretKeyHasher
from mgmt.testing import MINIMAL_CONFIG, MemoryKeyring


def _hash(plain: str, prefix: str) -> str:
    hashed = bcrypt.hashpw(plain.encode(), bcrypt.gensalt(4)).decode()
    return prefix + hashed[4:]


@pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
def test_reference_bcrypt_hashes_verify(prefix: str) -> None:
    keys = ManagementKeys(lambda: _hash("quotio-key", prefix))
    assert keys.verify("quotio-key")
    assert not keys.verify("quotio-kez")


def test_plaintext_secret_verifies_before_hashing() -> None:
    keys = ManagementKeys(lambda: "plain-secret")
    assert keys.verify("plain-secret")
    assert not keys.verify("plain-secreT")
    assert not keys.verify("")


def test_env_and_generated_keys_verify() -> None:
    keys = ManagementKeys(lambda: "", env_password=" env-pass \n", generated_key="gen-key")
    assert keys.verify("env-pass")
    assert keys.verify("gen-key")
    assert not keys.verify("other")


def test_no_sources_verifies_nothing() -> None:
    assert not ManagementKeys(lambda: "").verify("anything")


def test_verified_bcrypt_result_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = _hash("cached-key", "$2a$")
    calls = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed_password: bytes) -> bool:
        calls.append(1)
        return real(password, hashed_password)

    monkeypatch.setattr(keys_module.bcrypt, "checkpw", counting)
    keys = ManagementKeys(lambda: hashed)
    for _ in range(5):
        assert keys.verify("cached-key")
    assert len(calls) == 1
    for _ in range(2):
        assert not keys.verify("wrong-key")
    assert len(calls) == 3


def test_cache_holds_no_key() -> None:
    keys = ManagementKeys(lambda: _hash("secret-value", "$2b$"))
    assert keys.verify("secret-value")
    cached = repr(keys._verified)
    assert "secret-value" not in cached


def test_cache_follows_secret_change() -> None:
    secret = {"value": _hash("first", "$2b$")}
    keys = ManagementKeys(lambda: secret["value"])
    assert keys.verify("first")
    secret["value"] = _hash("second", "$2b$")
    assert not keys.verify("first")
    assert keys.verify("second")


def test_overlong_key_does_not_match() -> None:
    keys = ManagementKeys(lambda: _hash("a" * 72, "$2b$"))
    assert not keys.verify("a" * 80)


def test_hash_key_rejects_overlong() -> None:
    with pytest.raises(ValueError, match="at most 72"):
        hash_key("x" * 73)
    assert is_bcrypt_hash(hash_key("short"))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": "Bearer abc"}, "abc"),
        ({"authorization": "bearer  abc "}, "abc"),
        ({"authorization": "abc"}, "abc"),
        ({"x-management-key": "xyz"}, "xyz"),
        ({"authorization": "Basic Zm9v", "x-management-key": "xyz"}, "xyz"),
        ({}, ""),
    ],
)
def test_extract_presented_key(headers: dict[str, str], expected: str) -> None:
    assert extract_presented_key(headers) == expected


def test_generated_key_in_keyring(tmp_path: Path) -> None:
    backend = MemoryKeyring()
    store = GeneratedKeyStore(tmp_path, backend=backend)
    key = store.load_or_create()
    assert backend.passwords[("cliproxy", "management-key")] == key
    assert store.load_or_create() == key
    assert not (tmp_path / "management-key").exists()


def test_generated_key_file_without_keyring(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    GeneratedKeyStore._file_fallback_logged = False
    caplog.set_level(logging.INFO)
    store = GeneratedKeyStore(tmp_path, backend=keyring.backends.fail.Keyring())
    key = store.load_or_create()
    key_file = tmp_path / "management-key"
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert store.load_or_create() == key

    fallback_logs = [r for r in caplog.records if "no OS keyring backend" in r.getMessage()]
    assert len(fallback_logs) == 1
    assert all(key not in record.getMessage() for record in caplog.records)


def test_key_file_permissions_repaired(tmp_path: Path) -> None:
    key_file = tmp_path / "management-key"
    key_file.write_text("existing-key\n")
    key_file.chmod(0o644)
    store = GeneratedKeyStore(tmp_path, backend=keyring.backends.fail.Keyring())
    assert store.load() == "existing-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_read_management_key_matches_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys_module.keyring, "get_keyring", keyring.backends.fail.Keyring)
    first = read_management_key(tmp_path / "config.yaml")
    assert first == read_management_key(tmp_path / "config.yaml")
    assert (tmp_path / "management-key").read_text().strip() == first


COMMENTED_CONFIG = MINIMAL_CONFIG.replace(
    'secret-key: ""', 'secret-key: "my-plain-key"  # set by Quotio'
).replace("remote-management:", "# management access\nremote-management:")


def test_plaintext_secret_hashed_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(COMMENTED_CONFIG)
    config = ConfigAccess.standalone(ConfigFile(path))
    assert SecretKeyHasher(config).run()

    text = path.read_text()
    assert "my-plain-key" not in text
    assert "# set by Quotio" in text
    assert "# management access" in text
    assert "# cliproxy test config" in text
    stored = YAML(typ="safe").load(text)["remote-management"]["secret-key"]
    assert is_bcrypt_hash(stored)
    assert ManagementKeys(lambda: stored).verify("my-plain-key")
    assert not SecretKeyHasher(config).run()


def test_existing_hash_left_alone(tmp_path: Path) -> None:
    hashed = _hash("k", "$2a$")
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL_CONFIG.replace('secret-key: ""', f'secret-key: "{hashed}"'))
    before = path.read_bytes()
    assert not SecretKeyHasher(ConfigAccess.standalone(ConfigFile(path))).run()
    assert path.read_bytes() == before
