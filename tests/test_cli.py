"""The `cliproxy` console command: keys, management key, setup snippets."""

import os
import subprocess

import yaml

from tests.harness import BIN, ROOT

ENV = {**os.environ, "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}


def cliproxy(config, *args):
    return subprocess.run(
        [str(BIN / "cliproxy"), "--config", str(config), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=ENV,
    )


def test_keys_add_and_remove(tmp_path):
    config = tmp_path / "config.yaml"
    added = cliproxy(config, "keys", "add", "sk-added-key-0123456789").stdout.strip()
    assert added == "sk-added-key-0123456789"
    assert "sk-added-key-0123456789" in yaml.safe_load(config.read_text())["api-keys"]

    first = yaml.safe_load(config.read_text())["api-keys"][0]
    assert cliproxy(config, "keys", "remove", first).returncode == 0
    assert cliproxy(config, "keys", "remove", "sk-added-key-0123456789").returncode == 0
    assert yaml.safe_load(config.read_text())["api-keys"] in ([], None)
    assert "# Proxy keys" in config.read_text()


def test_keys_add_rejects_management_key(tmp_path):
    config = tmp_path / "config.yaml"
    management_key = cliproxy(config, "management-key").stdout.strip()
    result = cliproxy(config, "keys", "add", management_key)
    assert result.returncode == 2
    assert "management key" in result.stderr


def test_management_key_stable_and_rotates(tmp_path):
    config = tmp_path / "config.yaml"
    first = cliproxy(config, "management-key").stdout.strip()
    again = cliproxy(config, "management-key").stdout.strip()
    rotated = cliproxy(config, "management-key", "--rotate").stdout.strip()
    assert len(first) >= 32
    assert again == first
    assert rotated != first
    assert cliproxy(config, "management-key").stdout.strip() == rotated
    assert oct((tmp_path / "management-key").stat().st_mode & 0o777) == "0o600"


def test_setup_prints_client_settings(tmp_path):
    config = tmp_path / "config.yaml"
    output = cliproxy(config, "setup").stdout
    key = yaml.safe_load(config.read_text())["api-keys"][0]
    assert f"ANTHROPIC_API_KEY={key}" in output
    assert 'base_url = "http://127.0.0.1:8317/v1"' in output
    assert "GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:8317" in output
