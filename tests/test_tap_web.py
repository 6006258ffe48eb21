"""cliproxy under mitmweb: streamed bodies visible, no secrets shown, a bounded number of flows."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pytest
import requests

from tests.harness import PROXY_KEY, ProxyProcess, default_config, free_port
from tests.test_tap_usage import CLAUDE

WEB_PASSWORD = "web-password-for-the-flow-api-0123"
MANAGEMENT_PASSWORD = "web-test-management-password-456789"
MAX_FLOWS = 5


@dataclass
class WebProxy(ProxyProcess):
    """A mitmweb process on a web port that the test chooses."""

    web_port: int = field(default_factory=free_port)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def command(self) -> list[str]:
        command = super().command()
        return [f"web_port={self.web_port}" if arg.startswith("web_port=") else arg for arg in command]


def start_web_proxy(directory, upstream, max_flows: int) -> WebProxy:
    (directory / "auths").mkdir()
    proxy = WebProxy(
        directory=directory,
        config=default_config(upstream, free_port(), directory / "auths"),
        entry="mitmweb",
        extra_args=["--set", f"web_password={WEB_PASSWORD}", "--set", f"cliproxy_web_flows={max_flows}"],
        env={"MANAGEMENT_PASSWORD": MANAGEMENT_PASSWORD},
    )
    return proxy.start()


@pytest.fixture
def web_proxy(tmp_path, upstream):
    proxy = start_web_proxy(tmp_path, upstream, MAX_FLOWS)
    yield proxy
    proxy.stop()


@pytest.fixture
def roomy_web_proxy(tmp_path, upstream):
    """A mitmweb process that keeps every flow of a test."""
    proxy = start_web_proxy(tmp_path, upstream, 100)
    yield proxy
    proxy.stop()


def web_get(proxy: ProxyProcess, path: str) -> requests.Response:
    response = requests.get(
        proxy.web_url + path, headers={"authorization": f"Bearer {WEB_PASSWORD}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response


def flow_with_request_id(proxy: ProxyProcess, request_id: str) -> dict:
    deadline = time.monotonic() + 10
    while True:
        for flow in web_get(proxy, "/flows").json():
            headers = dict(flow.get("response", {}).get("headers", []))
            if headers.get("x-cliproxy-request-id") == request_id and flow["response"].get("timestamp_end"):
                return flow
        assert time.monotonic() < deadline, f"mitmweb shows no finished flow for request {request_id}"
        time.sleep(0.05)


def test_streamed_body_visible_without_secrets(web_proxy, upstream):
    response = web_proxy.post("/v1/messages", {**CLAUDE, "stream": True})
    assert response.status_code == 200
    flow = flow_with_request_id(web_proxy, response.headers["x-cliproxy-request-id"])

    body = web_get(web_proxy, f"/flows/{flow['id']}/response/content.data").content
    assert body == response.content
    assert b"message_stop" in body
    request_headers = dict(flow["request"]["headers"])
    assert request_headers["x-api-key"] != "upstream-claude-A"
    assert "REDACTED" in request_headers["x-api-key"]

    management = web_proxy.get(
        "/v0/management/usage", key=None, headers={"authorization": f"Bearer {MANAGEMENT_PASSWORD}"}
    )
    assert management.status_code == 200
    web_proxy.post("/v1/messages", CLAUDE, key=None, headers={"x-api-key": PROXY_KEY})
    time.sleep(0.5)
    flow_listing = web_get(web_proxy, "/flows").text
    for secret in (PROXY_KEY, MANAGEMENT_PASSWORD, "upstream-claude-A", "upstream-claude-B", "upstream-claude-C"):
        assert secret not in flow_listing, secret


def test_flow_count_stays_bounded(web_proxy, upstream):
    for _ in range(3 * MAX_FLOWS):
        assert web_proxy.post("/v1/messages", CLAUDE).status_code == 200
    flows = web_get(web_proxy, "/flows").json()
    assert len(flows) == MAX_FLOWS
    assert all(json.dumps(flow).count("x-cliproxy-request-id") == 1 for flow in flows)


OAUTH_ACCESS_TOKEN = "web-test-oauth-access-token-0123456789"
NEW_PROXY_KEY = "sk-web-test-added-proxy-key-0123456789"


def flows_by_path(proxy: ProxyProcess, prefix: str) -> list[dict]:
    return [flow for flow in web_get(proxy, "/flows").json() if flow["request"]["path"].startswith(prefix)]


def flow_content(proxy: ProxyProcess, flow: dict, message: str) -> bytes:
    return web_get(proxy, f"/flows/{flow['id']}/{message}/content.data").content


def wait_until_hidden(proxy: ProxyProcess, flow: dict, secrets: list[str]) -> bytes:
    """Return the flow's response body as mitmweb shows it once no secret is left in it."""
    deadline = time.monotonic() + 10
    while True:
        body = flow_content(proxy, flow, "response")
        if not any(secret.encode() in body for secret in secrets) or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_management_flows_show_no_secret(roomy_web_proxy, upstream):
    web_proxy = roomy_web_proxy
    (web_proxy.directory / "auths" / "claude-user@example.com.json").write_text(json.dumps({
        "type": "claude",
        "email": "user@example.com",
        "access_token": OAUTH_ACCESS_TOKEN,
        "expired": "2099-01-01T00:00:00Z",
        "base_url": upstream.account_url("claude-oauth"),
    }))
    management = {"authorization": f"Bearer {MANAGEMENT_PASSWORD}"}
    secrets = [
        PROXY_KEY, NEW_PROXY_KEY, MANAGEMENT_PASSWORD, OAUTH_ACCESS_TOKEN,
        "upstream-claude-A", "upstream-codex-B", "upstream-gemini-C", "upstream-compat-A",
    ]

    # Each call's client gets the real body, secrets included.
    config = web_proxy.get("/v0/management/config", key=None, headers=management)
    assert config.status_code == 200
    assert "upstream-claude-A" in config.text
    assert "upstream-compat-A" in config.text
    keys = web_proxy.get("/v0/management/api-keys", key=None, headers=management)
    assert keys.json() == {"api-keys": [PROXY_KEY]}
    download = web_proxy.get(
        "/v0/management/auth-files/download?name=claude-user@example.com.json", key=None, headers=management
    )
    assert OAUTH_ACCESS_TOKEN in download.text
    added = requests.put(
        web_proxy.base_url + "/v0/management/api-keys", json=[PROXY_KEY, NEW_PROXY_KEY],
        headers=management, timeout=10,
    )
    assert added.status_code == 200, added.text
    removed = requests.delete(
        web_proxy.base_url + f"/v0/management/api-keys?value={NEW_PROXY_KEY}", headers=management, timeout=10
    )
    assert removed.status_code == 200, removed.text
    metrics = web_proxy.get("/metrics", key=None, headers={"x-management-key": MANAGEMENT_PASSWORD})
    assert metrics.status_code == 200
    assert "cliproxy_open_streams" in metrics.text

    # mitmweb's flow API shows none of those secrets.
    for prefix in ("/v0/management/config", "/v0/management/api-keys", "/v0/management/auth-files/download"):
        (flow,) = [flow for flow in flows_by_path(web_proxy, prefix) if flow["request"]["method"] == "GET"]
        shown = wait_until_hidden(web_proxy, flow, secrets)
        for secret in secrets:
            assert secret.encode() not in shown, (prefix, secret)
        assert b"hidden in the flow view" in shown, prefix

    for method in ("PUT", "DELETE"):
        (flow,) = [flow for flow in flows_by_path(web_proxy, "/v0/management/api-keys") if flow["request"]["method"] == method]
        request_body = flow_content(web_proxy, flow, "request")
        assert NEW_PROXY_KEY.encode() not in request_body, method
        assert NEW_PROXY_KEY not in flow["request"]["path"], method

    (metrics_flow,) = flows_by_path(web_proxy, "/metrics")
    assert b"cliproxy_open_streams" in wait_until_hidden(web_proxy, metrics_flow, secrets)

    flow_listing = web_get(web_proxy, "/flows").text
    for secret in secrets:
        assert secret not in flow_listing, secret
