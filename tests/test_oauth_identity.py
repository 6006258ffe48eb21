"""Endpoint configuration, identity extraction and token hygiene in logs."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from oauth import flow
from oauth.errors import IdentityError, InvalidConfig
from oauth.identity import claude_identity, codex_identity_from_id_token, decode_jwt_claims
from oauth.providers import get_provider, resolve_endpoints
from oauth.refresh import AccountRef, TokenRefresher
from oauth.tokens import TokenSet
from tests.fakes.oauth_server import FakeAccount, FakeOAuthServer, make_codex_id_token


def test_default_endpoints():
    endpoints = resolve_endpoints(None)
    assert endpoints["claude"].token_url == "https://platform.claude.com/v1/oauth/token"
    assert endpoints["codex"].authorize_url == "https://auth.openai.com/oauth/authorize"
    assert endpoints["gemini"].code_assist_url == "https://cloudcode-pa.googleapis.com"
    assert endpoints["gemini"].userinfo_url.startswith("https://www.googleapis.com/oauth2/")


def test_endpoint_overrides():
    endpoints = resolve_endpoints(
        {
            "codex": {"token-url": "https://127.0.0.1:9/token"},
            "gemini-cli": {"code-assist-url": "http://127.0.0.1:9/ca/"},
        }
    )
    assert endpoints["codex"].token_url == "https://127.0.0.1:9/token"
    assert endpoints["codex"].authorize_url == "https://auth.openai.com/oauth/authorize"
    assert endpoints["gemini"].code_assist_url == "http://127.0.0.1:9/ca"


@pytest.mark.parametrize(
    "config",
    [
        {"kimi": {"token-url": "https://x.test/token"}},
        {"claude": {"userinfo-url": "https://x.test/u"}},
        {"claude": "https://x.test"},
        {"claude": {"token-url": "http://127.0.0.1:9/token"}},
        {"gemini": {"userinfo-url": "http://example.test/u"}},
        {"codex": {"authorize-url": 42}},
    ],
)
def test_invalid_endpoint_config(config):
    with pytest.raises(InvalidConfig):
        resolve_endpoints(config)


def test_provider_aliases():
    assert get_provider("anthropic").name == "claude"
    assert get_provider("OpenAI").name == "codex"
    assert get_provider("gemini-cli").name == "gemini"


def test_codex_identity_from_id_token():
    token = make_codex_id_token(FakeAccount(email="a@b.c", chatgpt_account_id="acct-7", chatgpt_plan_type="pro"))
    identity = codex_identity_from_id_token(token)
    assert identity.email == "a@b.c"
    assert identity.account_id == "acct-7"
    assert identity.plan == "pro"


@pytest.mark.parametrize("token", ["abc", "a.b", "a.!!!.c", "a.WzFd.c"])
def test_decode_jwt_claims_invalid(token):
    with pytest.raises(IdentityError):
        decode_jwt_claims(token)


def test_claude_identity_without_account_objects():
    identity = claude_identity(TokenSet(access_token="a", refresh_token=None, expiry=None, response={}))
    assert identity.email is None
    assert identity.organization_uuid is None


def test_token_set_repr_hides_tokens():
    tokens = TokenSet(access_token="secret-a", refresh_token="secret-r", expiry=None, id_token="secret-i")
    assert "secret" not in repr(tokens)


def test_no_token_in_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeOAuthServer() as fake:
        endpoints = resolve_endpoints(fake.endpoints_config())
        registry = flow.LoginRegistry(tmp_path, endpoints, http=fake.http_settings())
        try:
            for provider in ("claude", "codex", "gemini"):
                begun = registry.begin(provider)
                registry.callback(begun["state"], redirect_url=fake.authorize(begun["url"]))
                assert registry.wait(begun["state"], timeout=10) == {"status": "ok"}
        finally:
            registry.close()

        refresher = TokenRefresher(endpoints, http=fake.http_settings())
        try:
            path = next(tmp_path.glob("codex-*.json"))
            asyncio.run(refresher.refresh(AccountRef(path, "codex")))
        finally:
            refresher.close()

    secrets_seen = set()
    for path in tmp_path.glob("*.json"):
        data = json.loads(path.read_text())
        token = data.get("token") or data
        secrets_seen.update({token["access_token"], token["refresh_token"]})
    secrets_seen.update(
        request.fields.get("code_verifier") for request in fake.token_requests if "code_verifier" in request.fields
    )
    assert len(secrets_seen) >= 6
    text = "\n".join(record.getMessage() for record in caplog.records)
    for secret in secrets_seen:
        assert secret not in text
