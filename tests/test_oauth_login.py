"""Interactive logins against the fake OAuth server: URLs, callbacks, states and account files."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from oauth import flow
from oauth.errors import (
    AuthorizationDenied,
    InvalidCallback,
    InvalidGrant,
    InvalidState,
    LoginNotPending,
    StateExpired,
    StateMismatch,
    StateNotFound,
)
from oauth.flow import LoginRegistry
from oauth.identity import LOAD_CODE_ASSIST_BODY
from oauth.providers import (
    CLAUDE_CLIENT_ID,
    CODEX_CLIENT_ID,
    GEMINI_CLI_CLIENT_ID,
    GEMINI_CLI_CLIENT_SECRET,
    resolve_endpoints,
)
from tests.fakes.oauth_server import FakeClock, FakeOAuthServer


@pytest.fixture
def fake():
    with FakeOAuthServer() as server:
        yield server


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def registry(fake, tmp_path, clock):
    saved: list[tuple[Path, str]] = []
    reg = LoginRegistry(
        tmp_path,
        resolve_endpoints(fake.endpoints_config()),
        http=fake.http_settings(),
        clock=clock,
        on_saved=lambda path, provider: saved.append((path, provider)),
    )
    reg.saved = saved  # type: ignore[attr-defined]
    yield reg
    reg.close()


def _query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _login(registry: LoginRegistry, fake: FakeOAuthServer, provider: str, **kwargs) -> str:
    begun = registry.begin(provider, **kwargs)
    location = fake.authorize(begun["url"])
    assert registry.callback(begun["state"], redirect_url=location) == {"status": "ok"}
    assert registry.wait(begun["state"], timeout=10) == {"status": "ok"}
    return begun["state"]


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_claude_login_writes_account_file(registry, fake, tmp_path):
    begun = registry.begin("claude")
    assert begun["status"] == "ok"
    params = _query(begun["url"])
    assert params["client_id"] == CLAUDE_CLIENT_ID
    assert params["redirect_uri"] == "http://localhost:54545/callback"
    assert params["code"] == "true"
    assert params["code_challenge_method"] == "S256"
    assert params["state"] == begun["state"]
    assert "user:inference" in params["scope"].split()

    location = fake.authorize(begun["url"])
    assert registry.status(begun["state"]) == {"status": "wait"}
    registry.callback(begun["state"], redirect_url=location)
    assert registry.wait(begun["state"], timeout=10) == {"status": "ok"}

    path = tmp_path / "claude-user@example.com.json"
    assert registry.saved == [(path, "claude")]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = _read(path)
    assert data["type"] == "claude"
    assert data["email"] == "user@example.com"
    assert fake.is_valid_access_token(data["access_token"])
    assert fake.is_valid_refresh_token(data["refresh_token"])
    assert data["id_token"] == ""
    assert data["account_uuid"] == fake.account.account_uuid
    assert data["organization_uuid"] == fake.account.organization_uuid
    assert data["organization_name"] == "Example Org"
    assert data["disabled"] is False
    assert data["expired"].endswith("Z")
    assert data["last_refresh"].endswith("Z")

    exchange = fake.token_requests[-1]
    assert exchange.content_type.startswith("application/json")
    assert exchange.fields["grant_type"] == "authorization_code"
    assert exchange.fields["state"] == begun["state"]
    assert _s256(exchange.fields["code_verifier"]) == fake.challenges[begun["state"]]


def test_codex_login_names_file_by_account_and_plan(registry, fake, tmp_path):
    _login(registry, fake, "codex")

    account_hash = hashlib.sha256(b"acct-1234").hexdigest()[:8]
    path = tmp_path / f"codex-{account_hash}-user@example.com-plus.json"
    data = _read(path)
    assert data["type"] == "codex"
    assert data["account_id"] == "acct-1234"
    assert data["id_token"].count(".") == 2
    assert fake.is_valid_refresh_token(data["refresh_token"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    exchange = fake.token_requests[-1]
    assert exchange.content_type == "application/x-www-form-urlencoded"
    assert exchange.fields["client_id"] == CODEX_CLIENT_ID
    assert exchange.fields["redirect_uri"] == "http://localhost:1455/auth/callback"
    assert "code_verifier" in exchange.fields


def test_codex_authorize_url_has_extra_params(registry):
    params = _query(registry.begin("codex")["url"])
    assert params["prompt"] == "login"
    assert params["id_token_add_organizations"] == "true"
    assert params["codex_cli_simplified_flow"] == "true"
    assert params["scope"] == "openid email profile offline_access"


def test_gemini_login_discovers_project(registry, fake, tmp_path):
    begun = registry.begin("gemini")
    params = _query(begun["url"])
    assert params["access_type"] == "offline"
    assert params["prompt"] == "consent"
    assert "code_challenge" not in params

    location = fake.authorize(begun["url"])
    registry.callback(begun["state"], redirect_url=location)
    assert registry.wait(begun["state"], timeout=10) == {"status": "ok"}

    path = tmp_path / "gemini-user@example.com-fake-project-123.json"
    data = _read(path)
    assert data["type"] == "gemini"
    assert data["project_id"] == "fake-project-123"
    assert data["auto"] is True
    token = data["token"]
    assert fake.is_valid_access_token(token["access_token"])
    assert fake.is_valid_refresh_token(token["refresh_token"])
    assert token["client_id"] == GEMINI_CLI_CLIENT_ID
    assert token["client_secret"] == GEMINI_CLI_CLIENT_SECRET
    assert token["token_uri"] == f"{fake.base_url}/token"
    assert token["expiry"].endswith("000Z")
    assert fake.load_code_assist_bodies == [LOAD_CODE_ASSIST_BODY]
    assert fake.token_requests[-1].fields["client_secret"] == GEMINI_CLI_CLIENT_SECRET


def test_gemini_login_uses_given_project(registry, fake, tmp_path):
    _login(registry, fake, "gemini-cli", project_id="my-project")

    data = _read(tmp_path / "gemini-user@example.com-my-project.json")
    assert data["project_id"] == "my-project"
    assert data["auto"] is False
    assert fake.load_code_assist_bodies == []
    assert fake.userinfo_calls == 1


def test_gemini_login_without_project_fails(registry, fake, tmp_path):
    fake.account.project_id = None
    begun = registry.begin("gemini")
    registry.callback(begun["state"], redirect_url=fake.authorize(begun["url"]))
    result = registry.wait(begun["state"], timeout=10)

    assert result["status"] == "error"
    assert "no project" in result["error"]
    assert list(tmp_path.iterdir()) == []


def test_relogin_keeps_operator_fields(registry, fake, tmp_path):
    path = tmp_path / "claude-user@example.com.json"
    path.write_text(
        json.dumps(
            {
                "type": "claude",
                "email": "user@example.com",
                "access_token": "old-access",
                "refresh_token": "old-refresh",
                "expired": "2020-01-01T00:00:00Z",
                "priority": 5,
                "prefix": "team",
                "disabled": True,
                "note": "shared account",
                "proxy_url": "socks5://127.0.0.1:1080",
                "base_url": "https://claude.example.test",
                "excluded_models": ["claude-opus-*"],
                "custom_key": {"kept": True},
            }
        )
    )
    os.chmod(path, 0o644)

    _login(registry, fake, "claude")

    data = _read(path)
    assert data["access_token"] != "old-access"
    assert fake.is_valid_refresh_token(data["refresh_token"])
    assert data["priority"] == 5
    assert data["prefix"] == "team"
    assert data["disabled"] is True
    assert data["note"] == "shared account"
    assert data["proxy_url"] == "socks5://127.0.0.1:1080"
    assert data["base_url"] == "https://claude.example.test"
    assert data["excluded_models"] == ["claude-opus-*"]
    assert data["custom_key"] == {"kept": True}
    assert data["expired"] != "2020-01-01T00:00:00Z"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_callback_with_pasted_url_only(registry, fake, tmp_path):
    begun = registry.begin("codex")
    location = fake.authorize(begun["url"])

    assert registry.callback(None, redirect_url=location) == {"status": "ok"}
    assert registry.wait(begun["state"], timeout=10) == {"status": "ok"}
    assert len(list(tmp_path.glob("codex-*.json"))) == 1


def test_callback_with_separate_code(registry, fake):
    begun = registry.begin("codex")
    code = _query(fake.authorize(begun["url"]))["code"]

    registry.callback(begun["state"], code=code)
    assert registry.wait(begun["state"], timeout=10) == {"status": "ok"}


def test_callback_with_claude_hash_code(registry, fake):
    begun = registry.begin("claude")
    code = _query(fake.authorize(begun["url"]))["code"]

    registry.callback(begun["state"], code=f"{code}#{begun['state']}")
    assert registry.wait(begun["state"], timeout=10) == {"status": "ok"}


def test_callback_hash_code_with_other_state(registry, fake):
    begun = registry.begin("claude")
    code = _query(fake.authorize(begun["url"]))["code"]

    with pytest.raises(StateMismatch):
        registry.callback(begun["state"], code=f"{code}#someoneelse")
    assert registry.status(begun["state"]) == {"status": "wait"}


def test_callback_url_state_differs(registry, fake):
    first = registry.begin("codex")
    second = registry.begin("codex")
    location = fake.authorize(second["url"])

    with pytest.raises(StateMismatch):
        registry.callback(first["state"], redirect_url=location)


def test_callback_provider_mismatch(registry, fake):
    begun = registry.begin("codex")
    with pytest.raises(StateMismatch):
        registry.callback(begun["state"], code="abc", provider="claude")


def test_complete_accepts_every_pasted_form(fake):
    endpoints = resolve_endpoints(fake.endpoints_config())
    http = fake.http_settings()

    session = flow.start("codex", endpoints)
    location = fake.authorize(session.url)
    assert flow.complete(session, location, http=http).access_token

    session = flow.start("codex", endpoints)
    query_only = "?" + urlsplit(fake.authorize(session.url)).query
    assert flow.complete(session, query_only, http=http).access_token

    session = flow.start("codex", endpoints)
    bare_code = _query(fake.authorize(session.url))["code"]
    assert flow.complete(session, bare_code, http=http).access_token

    session = flow.start("claude", endpoints)
    code = _query(fake.authorize(session.url))["code"]
    assert flow.complete(session, f"{code}#{session.state}", http=http).access_token


def test_complete_rejects_other_state(fake):
    endpoints = resolve_endpoints(fake.endpoints_config())
    session = flow.start("codex", endpoints)
    code = _query(fake.authorize(session.url))["code"]

    with pytest.raises(StateMismatch):
        flow.complete(session, f"http://localhost:1455/auth/callback?code={code}&state=other")
    assert fake.grant_calls["authorization_code"] == 0


def test_complete_reports_provider_error(fake):
    session = flow.start("codex", resolve_endpoints(fake.endpoints_config()))
    pasted = f"http://localhost:1455/auth/callback?error=access_denied&state={session.state}"

    with pytest.raises(AuthorizationDenied, match="access_denied"):
        flow.complete(session, pasted)


def test_complete_rejects_empty_input(fake):
    session = flow.start("codex", resolve_endpoints(fake.endpoints_config()))
    with pytest.raises(InvalidCallback):
        flow.complete(session, "   ")


def test_unknown_state(registry):
    assert registry.status("0123abcd") == {"status": "error", "error": "unknown or expired state"}
    with pytest.raises(StateNotFound):
        registry.callback("0123abcd", code="abc")


@pytest.mark.parametrize("state", ["", "has space", "a/b", "x" * 129, "a..b", "é"])
def test_invalid_state_format(registry, state):
    with pytest.raises(InvalidState):
        registry.status(state)
    with pytest.raises(InvalidState):
        registry.callback(state, code="abc")


def test_state_expires_after_ten_minutes(registry, fake, clock):
    begun = registry.begin("codex")
    location = fake.authorize(begun["url"])

    clock.advance(minutes=10, seconds=1)
    status = registry.status(begun["state"])
    assert status["status"] == "error"
    assert "10 minutes" in status["error"]
    with pytest.raises(StateExpired):
        registry.callback(begun["state"], redirect_url=location)
    assert fake.grant_calls["authorization_code"] == 0

    clock.advance(minutes=10)
    assert registry.status(begun["state"]) == {"status": "error", "error": "unknown or expired state"}


def test_state_valid_before_ten_minutes(registry, fake, clock):
    begun = registry.begin("codex")
    location = fake.authorize(begun["url"])

    clock.advance(minutes=9, seconds=59)
    registry.callback(begun["state"], redirect_url=location)
    assert registry.wait(begun["state"], timeout=10) == {"status": "ok"}


def test_finished_login_is_forgotten_later(registry, fake, clock):
    state = _login(registry, fake, "codex")

    clock.advance(minutes=4)
    assert registry.status(state) == {"status": "ok"}
    clock.advance(minutes=2)
    assert registry.status(state) == {"status": "error", "error": "unknown or expired state"}


def test_provider_error_callback(registry):
    begun = registry.begin("claude")
    registry.callback(begun["state"], error="access_denied")

    status = registry.status(begun["state"])
    assert status["status"] == "error"
    assert "access_denied" in status["error"]


def test_second_callback_is_rejected(registry, fake):
    state = _login(registry, fake, "codex")
    with pytest.raises(LoginNotPending):
        registry.callback(state, code="again")


def test_callback_without_code_or_error(registry):
    begun = registry.begin("codex")
    with pytest.raises(InvalidCallback):
        registry.callback(begun["state"])


def test_failed_exchange_reports_error(registry, fake, tmp_path):
    begun = registry.begin("codex")
    location = fake.authorize(begun["url"])
    fake.fail_next(1, status=503)

    registry.callback(begun["state"], redirect_url=location)
    status = registry.wait(begun["state"], timeout=10)

    assert status["status"] == "error"
    assert "HTTP 503" in status["error"]
    assert list(tmp_path.iterdir()) == []


def test_code_of_other_login_is_rejected(registry, fake):
    begun = registry.begin("codex")
    code = _query(fake.authorize(begun["url"]))["code"]
    other_session = flow.start("codex", resolve_endpoints(fake.endpoints_config()))

    # The other session's PKCE verifier does not match the challenge the code was issued for.
    with pytest.raises(InvalidGrant, match="invalid_grant"):
        flow.complete(other_session, code, http=fake.http_settings())
    assert fake.grant_calls["authorization_code"] == 1


def test_code_is_single_use(fake):
    endpoints = resolve_endpoints(fake.endpoints_config())
    session = flow.start("codex", endpoints)
    code = _query(fake.authorize(session.url))["code"]
    flow.complete(session, code, http=fake.http_settings())

    with pytest.raises(InvalidGrant):
        flow.complete(session, code, http=fake.http_settings())


def test_callback_returns_before_exchange_finishes(registry, fake):
    begun = registry.begin("codex")
    location = fake.authorize(begun["url"])
    fake.token_delay = 1.0

    started = time.monotonic()
    registry.callback(begun["state"], redirect_url=location)
    assert time.monotonic() - started < 0.5
    assert registry.status(begun["state"]) == {"status": "wait"}
    assert registry.wait(begun["state"], timeout=10) == {"status": "ok"}


def test_cancel_pending_login(registry):
    begun = registry.begin("codex")
    assert registry.cancel(begun["state"]) is True
    assert registry.status(begun["state"])["status"] == "error"
