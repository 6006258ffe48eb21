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


@pytest.fixture
def web_proxy(tmp_path, upstream):
    (tmp_path / "auths").mkdir()
    proxy = WebProxy(
        directory=tmp_path,
        config=default_config(upstream, free_port(), tmp_path / "auths"),
        entry="mitmweb",
        extra_args=["--set", f"web_password={WEB_PASSWORD}", "--set", f"cliproxy_web_flows={MAX_FLOWS}"],
        env={"MANAGEMENT_PASSWORD": MANAGEMENT_PASSWORD},
    )
    proxy.start()
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
