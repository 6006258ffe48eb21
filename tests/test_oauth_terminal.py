"""`cliproxy login` in the terminal: pasted URLs, the local callback listener and failures."""

from __future__ import annotations

import io
import json
import queue
import re
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
import yaml

from config import ConfigFile
from oauth.terminal import login
from tests.fakes.oauth_server import FakeOAuthServer


class PastedInput(io.TextIOBase):
    """A stdin stand-in whose lines arrive when the test sends them."""

    def __init__(self) -> None:
        self._lines: queue.Queue[str] = queue.Queue()

    def send(self, line: str) -> None:
        self._lines.put(line + "\n")

    def __iter__(self):
        while True:
            yield self._lines.get()


class GrowingOutput(io.StringIO):
    def wait_for(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.getvalue())
            if match:
                return match
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} not in output:\n{self.getvalue()}")


@pytest.fixture
def fake():
    with FakeOAuthServer() as server:
        yield server


@pytest.fixture
def config_file(tmp_path, fake) -> ConfigFile:
    path = tmp_path / "config.yaml"
    document = {"auth-dir": str(tmp_path / "auths"), "oauth-endpoints": fake.endpoints_config()}
    path.write_text(yaml.safe_dump(document))
    return ConfigFile(path)


def _run_login(config_file, fake, provider, **kwargs):
    output = GrowingOutput()
    pasted = PastedInput()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(
            login(
                config_file,
                provider,
                open_browser=False,
                input_stream=pasted,
                output=output,
                http=fake.http_settings(),
                **kwargs,
            )
        ),
        daemon=True,
    )
    thread.start()
    url = output.wait_for(r"(https://\S+/authorize\?\S+)").group(1)
    return thread, result, output, pasted, url


def test_login_with_pasted_url(config_file, fake, tmp_path):
    thread, result, output, pasted, url = _run_login(config_file, fake, "codex", listen=False)

    pasted.send(fake.authorize(url))
    thread.join(timeout=10)

    assert result == [0]
    files = list((tmp_path / "auths").glob("codex-*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["email"] == "user@example.com"
    assert "Saved the codex login of user@example.com" in output.getvalue()


def test_login_with_browser_redirect(config_file, fake, tmp_path):
    thread, result, output, pasted, url = _run_login(
        config_file, fake, "claude", listen=True, callback_port=0
    )
    port = int(output.wait_for(r"http://localhost:(\d+)/callback").group(1))

    # The browser follows the provider's redirect to the local listener.
    location = urlsplit(fake.authorize(url))
    page = requests.get(urlunsplit(location._replace(netloc=f"127.0.0.1:{port}")), timeout=10)
    thread.join(timeout=10)

    assert page.status_code == 200
    assert "close this tab" in page.text
    assert result == [0]
    assert (tmp_path / "auths" / "claude-user@example.com.json").exists()


def test_login_provider_error(config_file, fake, tmp_path):
    thread, result, output, pasted, url = _run_login(config_file, fake, "codex", listen=False)

    pasted.send("http://localhost:1455/auth/callback?error=access_denied")
    thread.join(timeout=10)

    assert result == [1]
    assert "access_denied" in output.getvalue()
    assert not (tmp_path / "auths").exists() or list((tmp_path / "auths").iterdir()) == []


def test_login_times_out(config_file, fake):
    thread, result, output, pasted, url = _run_login(config_file, fake, "codex", listen=False, timeout=0.3)
    thread.join(timeout=10)

    assert result == [1]
    assert "no callback arrived" in output.getvalue()


def test_login_invalid_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"oauth-endpoints": {"claude": {"token-url": "http://example.test/t"}}}))
    output = io.StringIO()

    assert login(ConfigFile(path), "claude", open_browser=False, listen=False, output=output) == 2
    assert "https" in output.getvalue()


def test_login_unknown_provider(config_file):
    output = io.StringIO()
    assert login(config_file, "kimi", open_browser=False, listen=False, output=output) == 2
    assert "unknown OAuth provider" in output.getvalue()
