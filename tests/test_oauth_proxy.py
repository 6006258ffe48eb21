"""OAuth accounts on the request path: refresh on expiry, after a 401, in the background,
rejected refresh tokens, and Gemini CLI (Code Assist) accounts, through a real mitmdump."""

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from oauth.providers import CLAUDE_CLIENT_ID, GEMINI_CLI_CLIENT_ID
from tests.fakes import unauthorized
from tests.fakes.oauth_server import FakeOAuthServer
from tests.harness import PROXY_KEY, default_config, free_port

CLAUDE = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
MANAGEMENT_KEY = "test-management-password-0123456789"


@pytest.fixture
def oauth_server():
    with FakeOAuthServer() as server:
        yield server


def iso(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def oauth_config(upstream, oauth_server, tmp_path, **overrides):
    auth_dir = tmp_path / "auths"
    auth_dir.mkdir(exist_ok=True)
    config = default_config(upstream, free_port(), auth_dir, **overrides)
    for section in ("claude-api-key", "codex-api-key", "gemini-api-key", "openai-compatibility"):
        config[section] = []
    config["upstream-base-url"] = {
        "claude": upstream.account_url("claude-oauth"),
        "gemini-cli": upstream.account_url("gcli"),
    }
    config["oauth-endpoints"] = oauth_server.endpoints_config()
    return config


def start(start_proxy, config, oauth_server):
    return start_proxy(
        config=config,
        env={"REQUESTS_CA_BUNDLE": oauth_server.ca_path, "MANAGEMENT_PASSWORD": MANAGEMENT_KEY},
    )


def write_account(path, data):
    path.write_text(json.dumps(data))
    path.chmod(0o600)


def claude_file(oauth_server, auth_dir, name="claude-a@example.com.json", expires=timedelta(hours=8)):
    refresh_token = oauth_server.issue_refresh_token(CLAUDE_CLIENT_ID)
    path = auth_dir / name
    write_account(path, {
        "type": "claude", "email": name[7:-5], "access_token": f"at-old-{name}",
        "refresh_token": refresh_token, "expired": iso(expires),
    })
    return path, refresh_token


def test_expired_token_refreshed_once_for_20_requests(start_proxy, upstream, oauth_server, tmp_path):
    config = oauth_config(upstream, oauth_server, tmp_path)
    claude_file(oauth_server, tmp_path / "auths", expires=timedelta(seconds=-30))
    proxy = start(start_proxy, config, oauth_server)
    oauth_server.token_delay = 0.5

    statuses = []

    def call():
        statuses.append(proxy.post("/v1/messages", CLAUDE).status_code)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert statuses == [200] * 20
    assert oauth_server.grant_calls["refresh_token"] == 1
    tokens = {request.header("authorization") for request in upstream.requests()}
    assert len(tokens) == 1
    assert oauth_server.is_valid_access_token(tokens.pop().removeprefix("Bearer "))


def test_401_refreshes_and_retries_same_account(start_proxy, upstream, oauth_server, tmp_path):
    config = oauth_config(upstream, oauth_server, tmp_path)
    path, _ = claude_file(oauth_server, tmp_path / "auths")
    proxy = start(start_proxy, config, oauth_server)
    upstream.enqueue("claude-oauth", unauthorized())

    response = proxy.post("/v1/messages", CLAUDE)
    assert response.status_code == 200, response.text
    first, second = upstream.requests()
    assert first.header("authorization") == "Bearer at-old-claude-a@example.com.json"
    assert oauth_server.is_valid_access_token(second.header("authorization").removeprefix("Bearer "))
    assert oauth_server.grant_calls["refresh_token"] == 1
    stored = json.loads(path.read_text())
    assert stored["access_token"] == second.header("authorization").removeprefix("Bearer ")


def test_invalid_grant_sets_error_and_fails_over(start_proxy, upstream, oauth_server, tmp_path):
    config = oauth_config(upstream, oauth_server, tmp_path, routing={"strategy": "fill-first"})
    auth_dir = tmp_path / "auths"
    _, rejected = claude_file(oauth_server, auth_dir, "claude-a@example.com.json", timedelta(seconds=-30))
    claude_file(oauth_server, auth_dir, "claude-b@example.com.json")
    oauth_server.reject_refresh_token(rejected)
    proxy = start(start_proxy, config, oauth_server)

    response = proxy.post("/v1/messages", CLAUDE)
    assert response.status_code == 200, response.text
    assert upstream.requests()[0].header("authorization") == "Bearer at-old-claude-b@example.com.json"

    files = requests.get(
        proxy.base_url + "/v0/management/auth-files",
        headers={"authorization": f"Bearer {MANAGEMENT_KEY}"}, timeout=10,
    ).json()["files"]
    entry = next(item for item in files if item["name"] == "claude-a@example.com.json")
    assert entry["status"] == "error"
    assert "cliproxy login claude" in entry["status_message"]


def test_token_refreshed_before_expiry(start_proxy, upstream, oauth_server, tmp_path):
    config = oauth_config(upstream, oauth_server, tmp_path)
    path = tmp_path / "auths" / "gemini-g@example.com-proj-1.json"
    refresh_token = oauth_server.issue_refresh_token(GEMINI_CLI_CLIENT_ID)
    write_account(path, {
        "type": "gemini", "email": "g@example.com", "project_id": "proj-1",
        "token": {"access_token": "gemini-old", "refresh_token": refresh_token, "expiry": iso(timedelta(minutes=2))},
    })
    start(start_proxy, config, oauth_server)

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and oauth_server.grant_calls["refresh_token"] == 0:
        time.sleep(0.2)
    assert oauth_server.grant_calls["refresh_token"] == 1
    time.sleep(0.5)
    stored = json.loads(path.read_text())
    assert oauth_server.is_valid_access_token(stored["token"]["access_token"])


@pytest.fixture
def gemini_cli_proxy(start_proxy, upstream, oauth_server, tmp_path):
    config = oauth_config(upstream, oauth_server, tmp_path)
    write_account(tmp_path / "auths" / "gemini-g@example.com-proj-1.json", {
        "type": "gemini", "email": "g@example.com", "project_id": "proj-1",
        "token": {"access_token": "gemini-token", "refresh_token": "rt", "expiry": iso(timedelta(hours=1))},
    })
    return start(start_proxy, config, oauth_server)


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_gemini_cli_account_serves_genai_sdk(gemini_cli_proxy, upstream, api_version):
    from google import genai
    from google.genai import types

    client = genai.Client(
        api_key=PROXY_KEY,
        http_options=types.HttpOptions(base_url=gemini_cli_proxy.base_url, api_version=api_version),
    )
    answer = client.models.generate_content(model="gemini-2.5-pro", contents="hi")
    assert answer.text == "Hello from gcli."
    assert answer.usage_metadata.candidates_token_count == 7

    streamed = "".join(chunk.text or "" for chunk in client.models.generate_content_stream(model="gemini-2.5-pro", contents="hi"))
    assert streamed == "Hello from gcli."

    sent = upstream.requests()
    assert [request.path for request in sent] == ["/v1internal:generateContent", "/v1internal:streamGenerateContent"]
    assert sent[1].query.get("alt") == "sse"
    assert sent[0].json["project"] == "proj-1"
    assert sent[0].header("authorization") == "Bearer gemini-token"


def test_gemini_cli_account_serves_real_gemini_cli(gemini_cli_proxy, upstream, tmp_path):
    from tests.clients import require_cli, run_gemini

    gemini = require_cli("gemini")
    run = run_gemini(gemini, gemini_cli_proxy.base_url, tmp_path, model="gemini-2.5-pro")

    assert run.returncode == 0, run.stderr[-2000:]
    assert "Hello from gcli." in run.stdout
    sent = upstream.requests()
    assert [request.path for request in sent] == ["/v1internal:streamGenerateContent"]
    assert sent[0].json["model"] == "gemini-2.5-pro"
    assert sent[0].header("authorization") == "Bearer gemini-token"


@pytest.mark.parametrize(
    "route, provider, file_prefix",
    [("/anthropic-auth-url", "claude", "claude-"), ("/codex-auth-url", "codex", "codex-")],
)
def test_management_login_flow_completes(start_proxy, upstream, oauth_server, tmp_path, route, provider, file_prefix):
    config = oauth_config(upstream, oauth_server, tmp_path)
    proxy = start(start_proxy, config, oauth_server)
    headers = {"authorization": f"Bearer {MANAGEMENT_KEY}"}
    base = proxy.base_url + "/v0/management"

    started = requests.get(base + route, headers=headers, timeout=10).json()
    assert started["status"] == "ok"
    assert requests.get(base + "/get-auth-status", params={"state": started["state"]}, headers=headers, timeout=10).json() == {"status": "wait"}

    # The user's browser logs in and lands on the registered redirect URI; a web UI passes
    # that address back through /oauth-callback.
    landed = oauth_server.authorize(started["url"])
    answer = requests.post(base + "/oauth-callback", json={"provider": provider, "redirect_url": landed}, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text

    status = {}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status = requests.get(base + "/get-auth-status", params={"state": started["state"]}, headers=headers, timeout=10).json()
        if status["status"] != "wait":
            break
        time.sleep(0.2)
    assert status == {"status": "ok"}

    written = list((tmp_path / "auths").glob(f"{file_prefix}*.json"))
    assert len(written) == 1
    assert oct(written[0].stat().st_mode & 0o777) == "0o600"
    files = requests.get(base + "/auth-files", headers=headers, timeout=10).json()["files"]
    assert [entry["name"] for entry in files] == [written[0].name]


def test_unknown_login_state_is_error(start_proxy, upstream, oauth_server, tmp_path):
    proxy = start(start_proxy, oauth_config(upstream, oauth_server, tmp_path), oauth_server)
    status = requests.get(
        proxy.base_url + "/v0/management/get-auth-status", params={"state": "no-such-state"},
        headers={"authorization": f"Bearer {MANAGEMENT_KEY}"}, timeout=10,
    ).json()
    assert status["status"] == "error"
