"""OAuth login routes and the localhost redirect listener used by `is_webui=true` logins."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from mgmt.testing import Harness, response_json


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    running = Harness(tmp_path)
    yield running
    running.ctx.oauth_redirects.close()
    running.logins.close()


def start(harness: Harness, route: str) -> dict:
    response = harness.call("GET", "/v0/management" + route)
    assert response.status == 200
    return response_json(response)


def status_of(harness: Harness, state: str) -> dict:
    return response_json(harness.call("GET", f"/v0/management/get-auth-status?state={state}"))


def browser_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    ("route", "client_id", "redirect"),
    [
        ("/anthropic-auth-url", "9d1c250a-e61b-44d9-88ed-5944d1962f5e", "http://localhost:54545/callback"),
        ("/codex-auth-url", "app_EMoamEEZ73f0CkXaXp7hrann", "http://localhost:1455/auth/callback"),
        ("/gemini-cli-auth-url?project_id=my-proj", None, "http://localhost:8085/oauth2callback"),
    ],
)
def test_login_start_shape(harness: Harness, route: str, client_id: str | None, redirect: str) -> None:
    result = start(harness, route)
    assert result["status"] == "ok"
    query = parse_qs(urlsplit(result["url"]).query)
    assert query["state"] == [result["state"]]
    assert query["redirect_uri"] == [redirect]
    if client_id:
        assert query["client_id"] == [client_id]
    assert status_of(harness, result["state"]) == {"status": "wait"}


def test_unsupported_provider(harness: Harness) -> None:
    response = harness.call("GET", "/v0/management/antigravity-auth-url?is_webui=true")
    assert response.status == 501
    body = response_json(response)
    assert body["status"] == "error"
    assert "antigravity" in body["error"]


def test_status_checks(harness: Harness) -> None:
    assert status_of(harness, "abc123") == {"status": "error", "error": "unknown or expired state"}
    response = harness.call("GET", "/v0/management/get-auth-status?state=bad/state")
    assert response.status == 400
    assert response_json(response)["status"] == "error"
    assert response_json(harness.call("GET", "/v0/management/get-auth-status")) == {"status": "ok"}


def test_webui_redirect_completes_login(harness: Harness) -> None:
    state = start(harness, "/anthropic-auth-url?is_webui=true")["state"]
    port = harness.redirect_ports["claude"]
    assert harness.ctx.oauth_redirects.is_listening("claude")

    status, page = browser_get(f"http://127.0.0.1:{port}/other?state={state}")
    assert status == 404

    status, page = browser_get(
        f"http://127.0.0.1:{port}/callback?error=access_denied&state={state}"
    )
    assert status == 200
    assert "access_denied" in page
    result = status_of(harness, state)
    assert result["status"] == "error"
    assert "access_denied" in result["error"]
    assert wait_until(lambda: not harness.ctx.oauth_redirects.is_listening("claude"))


def test_redirect_with_unknown_state(harness: Harness) -> None:
    start(harness, "/codex-auth-url?is_webui=true")
    port = harness.redirect_ports["codex"]
    status, page = browser_get(f"http://127.0.0.1:{port}/auth/callback?code=x&state=unknown1")
    assert status == 400
    assert "unknown or expired state" in page


def test_no_listener_without_webui(harness: Harness) -> None:
    start(harness, "/anthropic-auth-url")
    assert not harness.ctx.oauth_redirects.is_listening("claude")


def test_oauth_callback_route(harness: Harness) -> None:
    state = start(harness, "/anthropic-auth-url")["state"]
    body = {"provider": "anthropic", "state": state, "error": "access_denied"}
    response = harness.call("POST", "/v0/management/oauth-callback", json=body)
    assert response_json(response) == {"status": "ok"}
    assert status_of(harness, state)["status"] == "error"

    again = harness.call("POST", "/v0/management/oauth-callback", json=body)
    assert again.status == 409
    missing = harness.call(
        "POST", "/v0/management/oauth-callback", json={"state": "nosuchstate", "code": "c"}
    )
    assert missing.status == 404
    no_state = harness.call("POST", "/v0/management/oauth-callback", json={"code": "c"})
    assert no_state.status == 400


def test_cancel_login(harness: Harness) -> None:
    state = start(harness, "/codex-auth-url")["state"]
    response = harness.call("DELETE", f"/v0/management/oauth-session?state={state}")
    assert response_json(response) == {"status": "ok", "cancelled": True}
    assert status_of(harness, state)["status"] == "error"
    assert harness.call("DELETE", "/v0/management/oauth-session").status == 400
