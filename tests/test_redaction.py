"""Redaction of headers, queries, bodies and known secrets, and secret-free writer output."""

import json
import logging
import time
from urllib.parse import quote

import pytest

from providers.usage import Usage
from store.applog import AppLogHandler
from store.records import Attempt, Outcome, RequestRecord, key_fingerprint
from store.redact import (
    REDACTED,
    Redactor,
    mask_secret,
    redact_headers,
    redact_json_body,
    redact_query,
    redact_url,
)
from store.request_log import RequestLogWriter
from store.usage_store import UsageStore

# Headers


def test_mask_long_value_shows_edges():
    assert mask_secret("sk-abcdefghijklmnopqrstuvwxyz") == "sk-a...wxyz"


def test_mask_short_value_fully():
    assert mask_secret("short-secret-123") == REDACTED


def test_authorization_keeps_scheme():
    headers = redact_headers([("Authorization", "Bearer sk-abcdefghijklmnopqrstuvwxyz")])
    assert headers == [("Authorization", "Bearer sk-a...wxyz")]


def test_authorization_short_token_masked():
    assert redact_headers({"authorization": "Bearer abc123"}) == [
        ("authorization", f"Bearer {REDACTED}")
    ]


@pytest.mark.parametrize(
    "name",
    [
        "x-api-key",
        "X-Goog-Api-Key",
        "x-management-key",
        "Cookie",
        "Set-Cookie",
        "chatgpt-account-id",
        "X-Auth-Token",
        "client-secret",
        "Proxy-Authorization",
    ],
)
def test_secret_header_masked(name):
    value = "0123456789abcdefghijklmnop"
    assert redact_headers([(name, value)]) == [(name, "0123...mnop")]


@pytest.mark.parametrize("name", ["Content-Type", "User-Agent", "Anthropic-Version", "Accept"])
def test_plain_header_kept(name):
    assert redact_headers([(name, "value/1.0")]) == [(name, "value/1.0")]


def test_headers_keep_order_and_duplicates():
    headers = [(b"Accept", b"a"), (b"x-api-key", b"k" * 30), (b"Accept", b"b")]
    assert [name for name, _ in redact_headers(headers)] == ["Accept", "x-api-key", "Accept"]


# Query strings


@pytest.mark.parametrize(
    "name", ["key", "api_key", "x-api-key", "apikey", "auth_token", "access_token",
             "client_secret", "Key"]
)
def test_secret_query_parameter_masked(name):
    assert redact_query(f"{name}=abcdefgh&alt=sse") == f"{name}=[REDACTED]&alt=sse"


def test_query_keeps_other_parameters():
    assert redact_query("alt=sse&beta=true&monkey=1") == "alt=sse&beta=true&monkey=1"


def test_query_long_value_partial():
    assert redact_query("key=AIzaSyA-0123456789abcdefghij") == "key=AIza...ghij"


def test_url_query_masked():
    assert redact_url("https://host/v1beta/models/x:generate?key=abcdefgh&alt=sse") == (
        "https://host/v1beta/models/x:generate?key=[REDACTED]&alt=sse"
    )


def test_url_without_query_unchanged():
    assert redact_url("/v1/messages") == "/v1/messages"


# Bodies


def test_json_secret_fields_anywhere():
    body = json.dumps({
        "api_key": "k1", "nested": {"apiKey": "k2", "list": [{"refresh_token": "r"}]},
        "access_token": "a", "id_token": "i", "client_secret": "c", "password": "p",
        "secret": "s", "secret-key": "sk", "token": "t", "api-key": "k3",
        "model": "claude-sonnet-4-5",
    }).encode()
    redacted = json.loads(redact_json_body(body))
    assert redacted["model"] == "claude-sonnet-4-5"
    assert redacted["nested"]["apiKey"] == REDACTED
    assert redacted["nested"]["list"][0]["refresh_token"] == REDACTED
    for key in ("api_key", "access_token", "id_token", "client_secret", "password", "secret",
                "secret-key", "token", "api-key"):
        assert redacted[key] == REDACTED, key


def test_json_schema_objects_kept():
    # A tool schema may name a property "password", but only string values count as secrets.
    body = json.dumps({"tools": [{"input_schema": {"properties": {
        "password": {"type": "string"}}}}]}).encode()
    assert redact_json_body(body) == body


def test_json_unchanged_body_byte_identical():
    body = b'{"model": "gpt-5",   "messages": [{"role": "user", "content": "hi"}]}'
    assert redact_json_body(body) is body


def test_json_token_shaped_strings_masked():
    body = json.dumps({"messages": [{"content": "my key is sk-abcdefghijklmnopqrstuv ok"}]})
    redacted = redact_json_body(body.encode()).decode()
    assert "sk-abcdefghijklmnopqrstuv" not in redacted
    assert "my key is sk-[REDACTED] ok" in redacted


def test_text_body_bearer_masked():
    body = b"curl -H 'Authorization: Bearer abcdefghijklmnop123456' https://x"
    assert redact_json_body(body) == b"curl -H 'Authorization: Bearer [REDACTED]' https://x"


def test_text_body_sk_key_masked():
    assert redact_json_body(b"key sk-ant-api03-abcdefghijklmnop done") == (
        b"key sk-[REDACTED] done"
    )


def test_form_body_tokens_masked():
    body = b"grant_type=refresh_token&refresh_token=rt-abcdef&client_id=app"
    assert redact_json_body(body) == (
        b"grant_type=refresh_token&refresh_token=[REDACTED]&client_id=app"
    )


def test_invalid_utf8_body_survives():
    body = b"\xff\xfe Bearer abcdefghijklmnop123456 \xff"
    assert redact_json_body(body) == b"\xff\xfe Bearer [REDACTED] \xff"


# Known secrets


def test_known_secret_replaced_in_text():
    redactor = Redactor({"proxy-key-0001"})
    assert redactor.redact_known("use proxy-key-0001 now") == f"use {REDACTED} now"


def test_known_secret_url_encoded_form_replaced():
    secret = "ab/cd+ef=gh"
    redactor = Redactor({secret})
    assert secret not in redactor.redact_url(f"/x?q={quote(secret, safe='')}")
    assert quote(secret, safe="") not in redactor.redact_url(f"/x?q={quote(secret, safe='')}")


def test_known_secret_json_escaped_form_replaced():
    redactor = Redactor({"ab/cd/ef/gh"})
    assert redactor.redact_known_bytes(b'{"v": "ab\\/cd\\/ef\\/gh"}') == b'{"v": "[REDACTED]"}'


def test_short_known_secret_ignored():
    assert Redactor({"abc"}).redact_known("abc") == "abc"


def test_set_secrets_replaces_set():
    redactor = Redactor({"first-secret"})
    redactor.set_secrets({"second-secret"})
    assert redactor.redact_known("first-secret second-secret") == f"first-secret {REDACTED}"


def test_add_secrets_keeps_known():
    redactor = Redactor({"first-secret"})
    redactor.add_secrets({"second-secret"})
    assert redactor.redact_known("first-secret second-secret") == f"{REDACTED} {REDACTED}"


def test_stream_redactor_every_split():
    secret = "tok-0123456789"
    redactor = Redactor({secret, "other-long-secret-value"})
    data = f"a {secret} b {secret}{secret} c".encode()
    expected = redactor.redact_known_bytes(data)
    for first in range(len(data) + 1):
        for second in range(first, len(data) + 1, 3):
            stream = redactor.stream()
            output = b"".join([
                stream.feed(data[:first]),
                stream.feed(data[first:second]),
                stream.feed(data[second:]),
                stream.finish(),
            ])
            assert output == expected, (first, second)


def test_stream_redactor_without_secrets_passes_through():
    stream = Redactor().stream()
    assert stream.feed(b"abc") == b"abc"
    assert stream.finish() == b""


# Writers never store known secrets


PROXY_KEY = "sk-proxy-PLAINTEXTKEY-7f3a9c2e"
ACCOUNT_TOKEN = "sk-ant-oat01-ACCOUNTTOKEN-5d8e1b"
MANAGEMENT_KEY = "mgmt-MANAGEMENTKEY-2c4f6a"
REFRESH_TOKEN = "rt-REFRESHTOKEN-9a8b7c6d"
SECRETS = [PROXY_KEY, ACCOUNT_TOKEN, MANAGEMENT_KEY, REFRESH_TOKEN]


def write_everything(directory, redactor: Redactor) -> None:
    """Drive every writer with requests, responses and log lines full of secrets."""
    headers = [
        ("Authorization", f"Bearer {PROXY_KEY}"),
        ("x-api-key", PROXY_KEY),
        ("X-Custom-Echo", f"token={ACCOUNT_TOKEN}"),
        ("Cookie", f"session={MANAGEMENT_KEY}"),
    ]
    body = json.dumps({
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": f"echo {PROXY_KEY} and {ACCOUNT_TOKEN}"}],
        "metadata": {"note": MANAGEMENT_KEY, "refresh_token": REFRESH_TOKEN},
    }).encode()
    response = f"data: {{\"text\": \"{ACCOUNT_TOKEN} {PROXY_KEY} {MANAGEMENT_KEY}\"}}\n\n".encode()

    for full in (True, False):
        writer = RequestLogWriter(directory / "logs", redactor, full=full)
        handle = writer.open(
            f"req-{full}", "POST", f"/v1/messages?key={PROXY_KEY}&beta=true", headers, body
        )
        handle.add_attempt(
            "alice.json", 401, upstream_url=f"https://api.example/v1?key={ACCOUNT_TOKEN}",
            reason=f"token {ACCOUNT_TOKEN} rejected",
        )
        handle.set_response(500, [("Set-Cookie", f"s={MANAGEMENT_KEY}"), ("X-Echo", PROXY_KEY)])
        # Chunks of 7 bytes split every secret across chunk edges.
        for index in range(0, len(response), 7):
            handle.append_response(response[index : index + 7])
        handle.close(500, error=f"upstream said {REFRESH_TOKEN}")

    app_log = AppLogHandler(redactor, directory=directory / "logs")
    logger = logging.getLogger("cliproxy.test.secrets")
    logger.propagate = False
    logger.addHandler(app_log)
    try:
        logger.error("refresh with %s for key %s failed", REFRESH_TOKEN, PROXY_KEY)
        try:
            raise RuntimeError(f"bad token {ACCOUNT_TOKEN}")
        except RuntimeError:
            logger.exception("management key %s rejected", MANAGEMENT_KEY)
    finally:
        logger.removeHandler(app_log)
        app_log.close()

    usage_store = UsageStore(directory / "usage.db")
    try:
        usage_store.submit(RequestRecord(
            request_id="req-1", timestamp=time.time(), route="POST /v1/messages",
            dialect="anthropic", key_label=key_fingerprint(PROXY_KEY),
            requested_model="claude-sonnet-4-5", upstream_model="claude-sonnet-4-5",
            provider="claude", account="alice.json", status=500,
            outcome=Outcome.UPSTREAM_ERROR, latency_ms=10.0, usage=Usage(input=1, output=1),
            attempts=[Attempt("alice.json", 401, None, "unauthorized")],
        ))
        assert usage_store.flush(timeout=10)
        exported = json.dumps(usage_store.export()) + json.dumps(usage_store.queue_pop(10))
        (directory / "export.json").write_text(exported)
    finally:
        usage_store.close()


def test_known_secrets_absent_from_written_files(tmp_path):
    redactor = Redactor(SECRETS)
    write_everything(tmp_path, redactor)

    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    names = {path.name for path in files}
    assert "main.log" in names
    assert any(name.startswith("error-") for name in names)
    assert any(name.startswith("v1-messages-") for name in names)

    for path in files:
        content = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in content, f"{secret} found in {path.name}"
            assert secret[4:-4].encode() not in content, f"part of {secret} in {path.name}"


def test_request_log_still_readable(tmp_path):
    redactor = Redactor(SECRETS)
    write_everything(tmp_path, redactor)
    (full_log,) = (tmp_path / "logs").glob("v1-messages-*-req-True.log")
    text = full_log.read_text()
    assert '"model":"claude-sonnet-4-5"' in text
    assert "Authorization: Bearer sk-p...9c2e" in text
    assert "URL: /v1/messages?key=sk-p...9c2e&beta=true" in text
