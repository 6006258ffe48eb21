"""`/api-call` (no request forgery beyond the account's provider) and `/latest-version`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mgmt.testing import MINIMAL_CONFIG, FakeUpstream, Harness, free_port, response_json


@pytest.fixture
def upstream() -> FakeUpstream:
    server = FakeUpstream()
    yield server
    server.close()


@pytest.fixture
def other() -> FakeUpstream:
    server = FakeUpstream()
    yield server
    server.close()


def add_account(harness: Harness, base_url: str, file_type: str = "antigravity") -> str:
    document = {"type": file_type, "access_token": "tok-secret", "base_url": base_url}
    body = json.dumps(document).encode()
    name = f"{file_type}-acct.json"
    assert harness.call("POST", f"/v0/management/auth-files?name={name}", body=body).status == 200
    files = response_json(harness.call("GET", "/v0/management/auth-files"))["files"]
    return next(entry["auth_index"] for entry in files if entry["name"] == name)


def api_call(harness: Harness, **call: object) -> tuple[int, dict]:
    response = harness.call("POST", "/v0/management/api-call", json=call)
    return response.status, response_json(response)


def test_api_call_substitutes_token(tmp_path: Path, upstream: FakeUpstream) -> None:
    harness = Harness(tmp_path)
    index = add_account(harness, upstream.url)
    upstream.routes["/v1internal:generateContent"] = (
        429,
        {"Content-Type": "application/json", "Retry-After": "7"},
        b'{"error": "quota"}',
    )
    status, result = api_call(
        harness,
        auth_index=index,
        method="POST",
        url=upstream.url + "/v1internal:generateContent?alt=sse",
        header={"Authorization": "Bearer $TOKEN$", "X-Extra": "$TOKEN$-x", "Host": "evil"},
        data='{"a": 1}',
    )
    assert status == 200
    assert result["status_code"] == 429
    assert result["header"]["Retry-After"] == ["7"]
    assert result["body"] == '{"error": "quota"}'
    seen = upstream.requests[-1]
    assert seen["path"] == "/v1internal:generateContent?alt=sse"
    assert seen["headers"]["Authorization"] == "Bearer tok-secret"
    assert seen["headers"]["X-Extra"] == "tok-secret-x"
    assert seen["headers"]["Host"] == f"127.0.0.1:{upstream.port}"
    assert seen["body"] == b'{"a": 1}'


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:{other}/",
        "http://localhost:{port}/",
        "http://[::1]:{port}/",
        "http://2130706433:{port}/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{port}/",
        "http://user@127.0.0.1:{port}/",
        "http://127.0.0.1:{port}@example.com/",
        "https://127.0.0.1:{port}/",
        "http://127.0.0.1:{port}/\r\nX: y",
        "//127.0.0.1:{port}/",
    ],
)
def test_api_call_foreign_url_rejected(
    tmp_path: Path, upstream: FakeUpstream, other: FakeUpstream, url: str
) -> None:
    harness = Harness(tmp_path)
    index = add_account(harness, upstream.url)
    target = url.format(port=upstream.port, other=other.port)
    status, result = api_call(harness, auth_index=index, method="GET", url=target)
    assert status == 400, result
    assert "error" in result
    assert upstream.requests == []
    assert other.requests == []


def test_api_call_redirect_to_other_host_rejected(
    tmp_path: Path, upstream: FakeUpstream, other: FakeUpstream
) -> None:
    harness = Harness(tmp_path)
    index = add_account(harness, upstream.url)
    upstream.routes["/go"] = (302, {"Location": other.url + "/stolen"}, b"")
    status, result = api_call(harness, auth_index=index, method="GET", url=upstream.url + "/go")
    assert status == 400
    assert other.requests == []


def test_api_call_redirect_within_host_followed(tmp_path: Path, upstream: FakeUpstream) -> None:
    harness = Harness(tmp_path)
    index = add_account(harness, upstream.url)
    upstream.routes["/old"] = (307, {"Location": "/new"}, b"")
    upstream.routes["/new"] = (200, {}, b"moved")
    status, result = api_call(
        harness, auth_index=index, method="POST", url=upstream.url + "/old", data="x"
    )
    assert status == 200
    assert result["body"] == "moved"
    assert [r["path"] for r in upstream.requests] == ["/old", "/new"]
    assert upstream.requests[-1]["body"] == b"x"


def test_api_call_configured_upstream_host_allowed(tmp_path: Path, upstream: FakeUpstream) -> None:
    config = MINIMAL_CONFIG + f'upstream-base-url:\n  claude: "{upstream.url}"\n'
    harness = Harness(tmp_path, config)
    document = {"type": "claude", "access_token": "claude-tok", "email": "c@example.com"}
    body = json.dumps(document).encode()
    harness.call("POST", "/v0/management/auth-files?name=claude-c.json", body=body)
    index = response_json(harness.call("GET", "/v0/management/auth-files"))["files"][0]["auth_index"]
    status, result = api_call(
        harness,
        auth_index=index,
        method="GET",
        url=upstream.url + "/api/oauth/usage",
        header={"Authorization": "Bearer $TOKEN$"},
    )
    assert status == 200
    assert result["status_code"] == 200
    assert upstream.requests[-1]["headers"]["Authorization"] == "Bearer claude-tok"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ({"method": "GET", "url": "http://x/"}, "auth_index is required"),
        ({"auth_index": "0000000000000000", "method": "GET", "url": "http://x/"}, "no account"),
        ({"auth_index": "a", "url": "http://x/"}, "missing method"),
        ({"auth_index": "a", "method": "GET"}, "missing url"),
        ({"auth_index": "a", "method": "TRACE", "url": "http://x/"}, "invalid method"),
        ({"auth_index": "a", "method": "GET", "url": "http://x/", "header": {"a": 1}}, "invalid body"),
        ({"auth_index": "a", "method": "GET", "url": "http://x/", "proxy_url": "http://p"}, "proxy_url"),
    ],
)
def test_api_call_validation(tmp_path: Path, call: dict, error: str) -> None:
    status, result = api_call(Harness(tmp_path), **call)
    assert status == 400
    assert error in result["error"]


def test_api_call_upstream_down_is_502(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    index = add_account(harness, f"http://127.0.0.1:{free_port()}")
    base = json.loads((harness.auth_dir / "antigravity-acct.json").read_text())["base_url"]
    status, result = api_call(harness, auth_index=index, method="GET", url=base + "/")
    assert status == 502
    assert result["error"] == "request failed"


def test_latest_version_from_release_url(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.routes["/releases/latest"] = (200, {}, b'{"tag_name": "v1.2.3", "name": "x"}')
    harness = Harness(tmp_path, release_url=upstream.url + "/releases/latest")
    response = harness.call("GET", "/v0/management/latest-version")
    assert response.status == 200
    assert response_json(response) == {"latest-version": "v1.2.3"}


@pytest.mark.parametrize(
    ("route", "error"),
    [
        ((500, {}, b"oops"), "unexpected_status"),
        ((200, {}, b"not json"), "decode_failed"),
        ((200, {}, b'{"name": "no tag"}'), "invalid_response"),
    ],
)
def test_latest_version_bad_answers(
    tmp_path: Path, upstream: FakeUpstream, route: tuple, error: str
) -> None:
    upstream.routes["/r"] = route
    harness = Harness(tmp_path, release_url=upstream.url + "/r")
    response = harness.call("GET", "/v0/management/latest-version")
    assert response.status == 502
    assert response_json(response)["error"] == error


def test_latest_version_offline(tmp_path: Path) -> None:
    harness = Harness(tmp_path, release_url=f"http://127.0.0.1:{free_port()}/latest")
    response = harness.call("GET", "/v0/management/latest-version")
    assert response.status == 502
    assert response_json(response)["error"] == "request_failed"


def test_latest_version_unconfigured(tmp_path: Path) -> None:
    response = Harness(tmp_path).call("GET", "/v0/management/latest-version")
    assert response.status == 503
