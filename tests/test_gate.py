"""The key gate, end to end through a real mitmdump process."""

import pytest
import requests

from tests.harness import PROXY_KEY

MESSAGE = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    "headers, query",
    [
        ({"authorization": f"Bearer {PROXY_KEY}"}, ""),
        ({"x-api-key": PROXY_KEY}, ""),
        ({"x-goog-api-key": PROXY_KEY}, ""),
        ({}, f"?key={PROXY_KEY}"),
        ({"authorization": "Bearer some-unrelated-token", "x-api-key": PROXY_KEY}, ""),
    ],
    ids=["bearer", "x-api-key", "x-goog-api-key", "query-key", "unrelated-authorization"],
)
def test_key_forms_accepted(proxy, upstream, headers, query):
    response = proxy.post("/v1/messages" + query, MESSAGE, key=None, headers=dict(headers))
    assert response.status_code == 200, response.text
    assert upstream.count() == 1


def test_credentials_stripped_upstream(proxy, upstream):
    proxy.post(
        f"/v1/messages?key={PROXY_KEY}&beta=true",
        MESSAGE,
        key=None,
        headers={"authorization": "Bearer client-own-token", "x-api-key": PROXY_KEY, "x-goog-api-key": PROXY_KEY},
    )
    sent = upstream.requests()[0]
    assert sent.header("authorization") is None
    assert sent.header("x-goog-api-key") is None
    assert sent.header("x-api-key").startswith("upstream-claude-")
    assert "key" not in sent.query
    assert sent.query.get("beta") == "true"


@pytest.mark.parametrize("key", [None, "sk-wrong-key"], ids=["missing", "wrong"])
def test_rejected_request_never_reaches_upstream(proxy, upstream, key):
    response = proxy.post("/v1/messages", MESSAGE, key=key)
    assert response.status_code == 401
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "authentication_error"
    assert upstream.count() == 0


def test_rejection_uses_openai_dialect(proxy):
    response = proxy.post("/v1/chat/completions", {"model": "gpt-5"}, key="sk-wrong")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_rejection_uses_gemini_dialect(proxy):
    response = proxy.post("/v1beta/models/gemini-2.5-pro:generateContent", {}, key="sk-wrong")
    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "method, path", [("HEAD", "/"), ("GET", "/"), ("GET", "/healthz")], ids=["head-root", "get-root", "healthz"]
)
def test_open_routes_need_no_key(proxy, upstream, method, path):
    response = requests.request(method, proxy.base_url + path, timeout=5)
    assert response.status_code == 200
    assert upstream.count() == 0


def test_cors_preflight_open(proxy):
    response = requests.options(
        proxy.base_url + "/v1/messages",
        headers={"origin": "http://example.test", "access-control-request-method": "POST"},
        timeout=5,
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"


def test_request_id_header_sent(proxy):
    response = proxy.post("/v1/messages", MESSAGE)
    assert len(response.headers["x-cliproxy-request-id"]) == 16


def test_oversize_body_gets_413_in_dialect(start_proxy, upstream):
    proxy = start_proxy(**{"body-size-limit-mb": 1})
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
    response = proxy.post("/v1/messages", body)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    assert upstream.count() == 0
