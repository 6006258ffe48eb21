"""Routing end to end: model → provider → account, aliases, strategies and model lists."""

import json
from collections import Counter

import pytest

from tests.harness import default_config, free_port

CLAUDE = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-5", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES = {"model": "gpt-5-codex", "input": "hi"}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_round_robin_spreads_over_three_accounts(proxy, upstream):
    for _ in range(6):
        assert proxy.post("/v1/messages", CLAUDE).status_code == 200
    counts = Counter(request.account for request in upstream.requests())
    assert counts == {"claude-A": 2, "claude-B": 2, "claude-C": 2}


def test_fill_first_uses_first_account(start_proxy, upstream):
    proxy = start_proxy(routing={"strategy": "fill-first"})
    for _ in range(4):
        proxy.post("/v1/messages", CLAUDE)
    assert {request.account for request in upstream.requests()} == {"claude-A"}


def test_higher_priority_tier_first(start_proxy, upstream, tmp_path):
    config = default_config(upstream, free_port(), tmp_path)
    config["claude-api-key"][2]["priority"] = 5
    proxy = start_proxy(config=config)
    for _ in range(3):
        proxy.post("/v1/messages", CLAUDE)
    assert {request.account for request in upstream.requests()} == {"claude-C"}


@pytest.mark.parametrize(
    "path, body, account_prefix",
    [
        ("/v1/messages", CLAUDE, "claude-"),
        ("/v1/chat/completions", CHAT, "codex-"),
        ("/v1/responses", RESPONSES, "codex-"),
        ("/v1beta/models/gemini-2.5-pro:generateContent", GEMINI, "gemini-"),
        ("/v1/models/gemini-2.5-flash:generateContent", GEMINI, "gemini-"),
    ],
    ids=["anthropic", "chat", "responses", "gemini-v1beta", "gemini-v1"],
)
def test_model_selects_provider(proxy, upstream, path, body, account_prefix):
    response = proxy.post(path, body)
    assert response.status_code == 200, response.text
    assert upstream.requests()[0].account.startswith(account_prefix)


def test_gemini_upstream_gets_api_key_header(proxy, upstream):
    proxy.post("/v1beta/models/gemini-2.5-pro:generateContent", GEMINI)
    sent = upstream.requests()[0]
    assert sent.header("x-goog-api-key").startswith("upstream-gemini-")
    assert sent.path == "/v1beta/models/gemini-2.5-pro:generateContent"


def test_alias_resolves_to_upstream_model(proxy, upstream):
    response = proxy.post("/v1/chat/completions", {**CHAT, "model": "compat-model"})
    assert response.status_code == 200, response.text
    sent = upstream.requests()[0]
    assert sent.account == "compat-A"
    assert sent.json["model"] == "upstream-model-x"
    assert sent.header("authorization") == "Bearer upstream-compat-A"
    assert int(sent.header("content-length")) == len(sent.body)


def test_body_forwarded_byte_for_byte(proxy, upstream):
    raw = b'{"model":"claude-sonnet-4-5",   "max_tokens":16,"messages":[{"role":"user","content":"h\\u00e9"}]}'
    proxy.post("/v1/messages", raw)
    assert upstream.requests()[0].body == raw


def test_gzip_request_body_read(proxy, upstream):
    import gzip

    body = gzip.compress(json.dumps(CLAUDE).encode())
    response = proxy.post("/v1/messages", body, headers={"content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert upstream.requests()[0].json["model"] == "claude-sonnet-4-5"


def test_zstd_request_body_read(proxy, upstream):
    from backports import zstd

    body = zstd.compress(json.dumps(RESPONSES).encode())
    response = proxy.post("/v1/responses", body, headers={"content-encoding": "zstd"})
    assert response.status_code == 200, response.text
    assert upstream.requests()[0].json["model"] == "gpt-5-codex"


def test_unserved_model_lists_served_ones(proxy, upstream):
    response = proxy.post("/v1/chat/completions", {**CHAT, "model": "no-such-model"})
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "no-such-model" in message
    assert "compat-model" in message
    assert upstream.count() == 0


def test_route_mismatch_is_400(proxy, upstream):
    response = proxy.post("/v1/messages", {**CLAUDE, "model": "gemini-2.5-pro"})
    assert response.status_code == 400
    assert "/v1beta/models/{model}:generateContent" in response.json()["error"]["message"]
    assert upstream.count() == 0


def test_missing_model_is_400(proxy):
    response = proxy.post("/v1/chat/completions", {"messages": []})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_disabled_account_skipped(start_proxy, upstream, tmp_path):
    config = default_config(upstream, free_port(), tmp_path)
    config["claude-api-key"][0]["excluded-models"] = ["*"]
    proxy = start_proxy(config=config)
    for _ in range(4):
        proxy.post("/v1/messages", CLAUDE)
    assert "claude-A" not in {request.account for request in upstream.requests()}


def test_models_openai_shape(proxy):
    data = proxy.get("/v1/models").json()
    ids = [model["id"] for model in data["data"]]
    assert data["object"] == "list"
    assert "compat-model" in ids
    assert "claude-sonnet-4-5" in ids
    assert len(ids) == len(set(ids))


def test_models_anthropic_shape(proxy):
    data = proxy.get("/v1/models", headers={"anthropic-version": "2023-06-01"}).json()
    assert data["has_more"] is False
    assert data["data"][0]["type"] == "model"


def test_models_gemini_shape(proxy):
    data = proxy.get("/v1beta/models").json()
    names = [model["name"] for model in data["models"]]
    assert "models/gemini-2.5-pro" in names
    assert not any("claude" in name for name in names)


def test_models_follow_config_changes(proxy):
    config = dict(proxy.config)
    config["openai-compatibility"] = [
        {**config["openai-compatibility"][0], "models": [{"name": "m2", "alias": "hot-added-model"}]}
    ]
    proxy.write_config(config)
    import time

    deadline = time.monotonic() + 5
    ids: list[str] = []
    while time.monotonic() < deadline:
        ids = [model["id"] for model in proxy.get("/v1/models").json()["data"]]
        if "hot-added-model" in ids:
            break
        time.sleep(0.2)
    assert "hot-added-model" in ids


def test_model_lookup_openai_shape(proxy):
    response = proxy.get("/v1/models/gpt-5")
    assert response.status_code == 200
    assert response.json()["id"] == "gpt-5"
    assert response.json()["object"] == "model"


def test_model_lookup_anthropic_shape(proxy):
    response = proxy.get("/v1/models/claude-sonnet-4-5", headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 200
    assert response.json()["type"] == "model"


def test_model_list_for_genai_v1_client(proxy):
    response = proxy.get("/v1/models", key=None, headers={"x-goog-api-key": proxy_key()})
    names = [model["name"] for model in response.json()["models"]]
    assert "models/gemini-2.5-pro" in names


def test_genai_sdk_lists_models(proxy):
    from google import genai
    from google.genai import types

    client = genai.Client(api_key=proxy_key(), http_options=types.HttpOptions(base_url=proxy.base_url))
    names = [model.name for model in client.models.list()]
    assert "models/gemini-2.5-pro" in names


def proxy_key():
    from tests.harness import PROXY_KEY

    return PROXY_KEY
