"""Quotio's management calls, replayed and decoded as strictly as its Swift Codable models.

Quotio (macOS app, `ManagementAPIClient.swift`) fails a whole call when a required key is
missing or a value has the wrong JSON type, and after a few failed refreshes it restarts the
proxy. The decoders below apply the same rules: required keys present, exact types (a bool
is not an int and an int is not a bool), optional keys absent, null, or of the right type,
unknown keys ignored. Status-only calls must answer 2xx.

Each call runs against the handlers directly and against a real mitmdump process serving
the management addon.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mgmt.testing import FakeUpstream, Harness, MgmtProxy

# ---------------------------------------------------------------------------------------
# Strict decoders


class DecodeError(AssertionError):
    """A response Quotio's decoder would reject."""


@dataclass(frozen=True)
class Optional_:
    """A key that may be absent or null, but has `schema` when present."""

    schema: Any


@dataclass(frozen=True)
class MapOf:
    """A JSON object with arbitrary keys whose values all have `schema`."""

    schema: Any


@dataclass(frozen=True)
class OneOf:
    """An object that must carry at least one of `keys` (Quotio's routing response)."""

    schema: dict[str, Any]
    keys: tuple[str, ...]


def decode(value: Any, schema: Any, where: str = "$") -> None:
    """Raise DecodeError when `value` does not decode with `schema`."""
    if schema is bool:
        if not isinstance(value, bool):
            raise DecodeError(f"{where}: expected Bool, got {value!r}")
    elif schema is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DecodeError(f"{where}: expected Int, got {value!r}")
    elif schema is str:
        if not isinstance(value, str):
            raise DecodeError(f"{where}: expected String, got {value!r}")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise DecodeError(f"{where}: expected Array, got {value!r}")
        for index, item in enumerate(value):
            decode(item, schema[0], f"{where}[{index}]")
    elif isinstance(schema, MapOf):
        if not isinstance(value, dict):
            raise DecodeError(f"{where}: expected Dictionary, got {value!r}")
        for key, item in value.items():
            decode(item, schema.schema, f"{where}.{key}")
    elif isinstance(schema, OneOf):
        decode(value, schema.schema, where)
        if not any(isinstance(value.get(key), str) for key in schema.keys):
            raise DecodeError(f"{where}: none of {schema.keys} is present")
    elif isinstance(schema, dict):
        if not isinstance(value, dict):
            raise DecodeError(f"{where}: expected Object, got {value!r}")
        for key, field_schema in schema.items():
            if isinstance(field_schema, Optional_):
                if value.get(key) is not None:
                    decode(value[key], field_schema.schema, f"{where}.{key}")
            elif key not in value or value[key] is None:
                raise DecodeError(f"{where}: required key {key!r} is missing")
            else:
                decode(value[key], field_schema, f"{where}.{key}")
    else:
        raise TypeError(f"unknown schema {schema!r}")


DEBUG = {"debug": bool}
CONFIG = {
    "debug": Optional_(bool),
    "proxy-url": Optional_(str),
    "routing-strategy": Optional_(str),
    "request-retry": Optional_(int),
    "max-retry-interval": Optional_(int),
    "logging-to-file": Optional_(bool),
    "request-log": Optional_(bool),
    "quota-exceeded": Optional_(
        {"switch-project": Optional_(bool), "switch-preview-model": Optional_(bool)}
    ),
}
ROUTING = OneOf({"strategy": Optional_(str), "value": Optional_(str)}, ("strategy", "value"))
AUTH_FILE = {
    "id": str,
    "name": str,
    "provider": str,
    "status": str,
    "disabled": bool,
    "unavailable": bool,
    "label": Optional_(str),
    "status_message": Optional_(str),
    "runtime_only": Optional_(bool),
    "source": Optional_(str),
    "path": Optional_(str),
    "email": Optional_(str),
    "account_type": Optional_(str),
    "account": Optional_(str),
    "auth_index": Optional_(str),
    "created_at": Optional_(str),
    "updated_at": Optional_(str),
    "last_refresh": Optional_(str),
}
AUTH_FILES = {"files": [AUTH_FILE]}
MODELS = {"models": [{"id": str, "owned_by": Optional_(str), "type": Optional_(str)}]}
USAGE = {
    "usage": Optional_(
        {
            "total_requests": Optional_(int),
            "success_count": Optional_(int),
            "failure_count": Optional_(int),
            "total_tokens": Optional_(int),
            "input_tokens": Optional_(int),
            "output_tokens": Optional_(int),
        }
    ),
    "failed_requests": Optional_(int),
}
API_KEYS = {"api-keys": [str]}
LOGS = {"lines": Optional_([str]), "line-count": Optional_(int), "latest-timestamp": Optional_(int)}
API_CALL = {"status_code": int, "header": Optional_(MapOf([str])), "body": Optional_(str)}
AUTH_URL = {"status": str, "url": Optional_(str), "state": Optional_(str), "error": Optional_(str)}
AUTH_STATUS = {"status": str, "error": Optional_(str)}
LATEST_VERSION = {"latest-version": str}


# ---------------------------------------------------------------------------------------
# Decoder self-checks: the decoders must reject what Swift rejects.


@pytest.mark.parametrize(
    ("value", "schema"),
    [
        ({"debug": 1}, DEBUG),
        ({"debug": "true"}, DEBUG),
        ({}, DEBUG),
        ({"request-retry": True}, CONFIG),
        ({"request-retry": 3.5}, CONFIG),
        ({"files": [{"id": "a", "name": "a", "provider": "p", "status": "ready", "disabled": False}]}, AUTH_FILES),
        (
            {
                "files": [
                    {
                        "id": "a",
                        "name": "a",
                        "provider": "p",
                        "status": "ready",
                        "disabled": False,
                        "unavailable": False,
                        "auth_index": 12,
                    }
                ]
            },
            AUTH_FILES,
        ),
        ({"api-keys": "k"}, API_KEYS),
        (["k"], API_KEYS),
        ({"mode": "x"}, ROUTING),
        ({"status_code": "200"}, API_CALL),
        ({"status_code": 200, "header": {"a": "b"}}, API_CALL),
    ],
)
def test_decoder_rejects_wrong_shapes(value: Any, schema: Any) -> None:
    with pytest.raises(DecodeError):
        decode(value, schema)


def test_decoder_accepts_absent_and_null_optionals() -> None:
    decode({}, CONFIG)
    decode({"debug": None, "quota-exceeded": None}, CONFIG)
    decode({"value": "fill-first"}, ROUTING)
    decode({"status_code": 204}, API_CALL)


# ---------------------------------------------------------------------------------------
# Clients: the handlers directly, and a real mitmdump process.


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class HandlerClient:
    """Sends Quotio's requests straight to the management service."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.auth_dir = harness.auth_dir

    def send(self, method: str, path: str, body: bytes = b"") -> Reply:
        response = self.harness.call(method, "/v0/management" + path, body=body)
        return Reply(response.status, response.content(), response.all_headers())


@pytest.fixture
def mgmt_proxy(tmp_path: Path) -> Any:
    proxy = MgmtProxy(tmp_path / "proxy")
    yield proxy
    proxy.close()


@pytest.fixture
def echo_upstream() -> Any:
    server = FakeUpstream()
    yield server
    server.close()


@pytest.fixture(params=["handlers", "mitmdump"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "handlers":
        return HandlerClient(Harness(tmp_path))
    return request.getfixturevalue("mgmt_proxy")


CLAUDE_FILE = {
    "type": "claude",
    "email": "alice@example.com",
    "access_token": "sk-ant-oat-test",
    "refresh_token": "rt",
    "expired": "2099-01-01T00:00:00Z",
    "last_refresh": "2026-01-01T00:00:00Z",
}


def body_of(value: Any) -> bytes:
    return json.dumps(value).encode()


def expect_2xx(reply: Reply, call: str) -> None:
    assert 200 <= reply.status < 300, f"{call}: HTTP {reply.status} {reply.body[:200]!r}"


# ---------------------------------------------------------------------------------------
# The calls, in the order of Quotio's endpoint table.


def test_settings_calls(client: Any) -> None:
    reply = client.send("GET", "/debug")  # 1
    expect_2xx(reply, "GET /debug")
    decode(reply.json(), DEBUG)

    expect_2xx(client.send("PUT", "/debug", body_of({"value": True})), "PUT /debug")  # 2
    assert client.send("GET", "/debug").json() == {"debug": True}

    reply = client.send("GET", "/config")  # 3
    expect_2xx(reply, "GET /config")
    decode(reply.json(), CONFIG)

    reply = client.send("GET", "/routing/strategy")  # 4
    expect_2xx(reply, "GET /routing/strategy")
    decode(reply.json(), ROUTING)
    reply = client.send("GET", "/routing")
    expect_2xx(reply, "GET /routing")
    decode(reply.json(), ROUTING)

    for path, value in [  # 5-12
        ("/routing/strategy", "fill-first"),
        ("/quota-exceeded/switch-project", False),
        ("/quota-exceeded/switch-preview-model", False),
        ("/request-retry", 5),
        ("/max-retry-interval", 120),
        ("/logging-to-file", True),
        ("/request-log", True),
        ("/proxy-url", "socks5://127.0.0.1:1080"),
    ]:
        method = "PATCH" if path.startswith("/quota-exceeded") else "PUT"
        expect_2xx(client.send(method, path, body_of({"value": value})), f"{method} {path}")
    expect_2xx(client.send("PUT", "/routing", body_of({"strategy": "round-robin"})), "PUT /routing")

    config = client.send("GET", "/config").json()
    decode(config, CONFIG)
    assert config["routing-strategy"] == "round-robin"
    assert config["request-retry"] == 5
    assert config["max-retry-interval"] == 120
    assert config["logging-to-file"] is True
    assert config["request-log"] is True
    assert config["proxy-url"] == "socks5://127.0.0.1:1080"
    assert config["quota-exceeded"] == {"switch-project": False, "switch-preview-model": False}

    expect_2xx(client.send("DELETE", "/proxy-url"), "DELETE /proxy-url")  # 13
    assert client.send("GET", "/proxy-url").json() == {"proxy-url": ""}

    for path, key, schema in [
        ("/logging-to-file", "logging-to-file", bool),
        ("/request-log", "request-log", bool),
        ("/request-retry", "request-retry", int),
        ("/max-retry-interval", "max-retry-interval", int),
        ("/quota-exceeded/switch-project", "switch-project", bool),
        ("/quota-exceeded/switch-preview-model", "switch-preview-model", bool),
        ("/proxy-url", "proxy-url", str),
    ]:
        reply = client.send("GET", path)
        expect_2xx(reply, f"GET {path}")
        decode(reply.json(), {key: schema})


def test_auth_file_calls(client: Any) -> None:
    name = "claude-alice@example.com.json"
    raw = body_of(CLAUDE_FILE)
    expect_2xx(client.send("POST", f"/auth-files?name={name}", raw), "POST /auth-files")  # 16

    reply = client.send("GET", "/auth-files")  # 14
    expect_2xx(reply, "GET /auth-files")
    listing = reply.json()
    decode(listing, AUTH_FILES)
    (entry,) = listing["files"]
    assert entry["name"] == name
    assert entry["provider"] == "claude"
    assert entry["status"] == "ready"
    assert entry["auth_index"] and len(entry["auth_index"]) == 16

    reply = client.send("GET", f"/auth-files/download?name={name}")  # 17
    expect_2xx(reply, "GET /auth-files/download")
    assert json.loads(reply.body) == CLAUDE_FILE

    status = body_of({"name": name, "disabled": True})
    expect_2xx(client.send("PATCH", "/auth-files/status", status), "PATCH /auth-files/status")  # 18
    entry = client.send("GET", "/auth-files").json()["files"][0]
    assert entry["disabled"] is True
    assert entry["status"] == "disabled"
    status = body_of({"name": name, "disabled": False})
    expect_2xx(client.send("PATCH", "/auth-files/status", status), "PATCH /auth-files/status")

    reply = client.send("GET", f"/auth-files/models?name={name}")  # 19
    expect_2xx(reply, "GET /auth-files/models")
    decode(reply.json(), MODELS)

    expect_2xx(client.send("DELETE", f"/auth-files?name={name}"), "DELETE /auth-files")  # 15
    assert client.send("GET", "/auth-files").json() == {"files": []}

    for extra in ("a.json", "b.json"):
        client.send("POST", f"/auth-files?name={extra}", raw)
    reply = client.send("DELETE", "/auth-files?all=true")
    expect_2xx(reply, "DELETE /auth-files?all=true")
    assert reply.json()["deleted"] == 2


def test_usage_and_key_calls(client: Any) -> None:
    reply = client.send("GET", "/usage")  # 20
    expect_2xx(reply, "GET /usage")
    decode(reply.json(), USAGE)

    reply = client.send("GET", "/api-keys")  # 21
    expect_2xx(reply, "GET /api-keys")
    decode(reply.json(), API_KEYS)
    keys = reply.json()["api-keys"]

    new_key = "sk-" + "A1b2" * 8
    expect_2xx(client.send("PUT", "/api-keys", body_of(keys + [new_key])), "PUT /api-keys")  # 22
    assert client.send("GET", "/api-keys").json()["api-keys"] == keys + [new_key]

    edited = "quotio-local-" + "0" * 36
    patch = body_of({"old": new_key, "new": edited})
    expect_2xx(client.send("PATCH", "/api-keys", patch), "PATCH /api-keys")  # 23
    assert client.send("GET", "/api-keys").json()["api-keys"] == keys + [edited]

    expect_2xx(client.send("DELETE", f"/api-keys?value={edited}"), "DELETE /api-keys")  # 24
    assert client.send("GET", "/api-keys").json()["api-keys"] == keys


def test_oauth_calls(client: Any) -> None:
    reply = client.send("GET", "/anthropic-auth-url?is_webui=true")  # 25
    if reply.status == 404:
        pytest.skip("OAuth login routes (25, 26) are not wired into the management API yet")
    expect_2xx(reply, "GET /anthropic-auth-url")
    decode(reply.json(), AUTH_URL)
    state = reply.json()["state"]
    reply = client.send("GET", f"/get-auth-status?state={state}")  # 26
    expect_2xx(reply, "GET /get-auth-status")
    decode(reply.json(), AUTH_STATUS)


def test_vertex_logs_and_api_call(client: Any) -> None:
    service_account = {
        "type": "service_account",
        "project_id": "proj-1",
        "client_email": "sa@proj-1.iam.gserviceaccount.com",
        "private_key": "-----BEGIN PRIVATE KEY-----\ntest\n-----END PRIVATE KEY-----\n",
    }
    reply = client.send("POST", "/vertex/import", body_of(service_account))  # 27
    expect_2xx(reply, "POST /vertex/import")
    assert (client.auth_dir / "vertex-proj-1.json").exists()

    reply = client.send("GET", "/logs")  # 28
    expect_2xx(reply, "GET /logs")
    decode(reply.json(), LOGS)
    after = reply.json()["latest-timestamp"]
    reply = client.send("GET", f"/logs?after={after}")
    expect_2xx(reply, "GET /logs?after=")
    decode(reply.json(), LOGS)

    expect_2xx(client.send("DELETE", "/logs"), "DELETE /logs")  # 29

    # 30: Quotio's warmup targets Google hosts; here the account's own base URL points at a
    # closed loopback port, so the call fails upstream but must stay a decodable error, and
    # a foreign host must be rejected.
    account = {"type": "antigravity", "access_token": "tok", "base_url": "http://127.0.0.1:9"}
    client.send("POST", "/auth-files?name=antigravity-a.json", body_of(account))
    index = next(
        entry["auth_index"]
        for entry in client.send("GET", "/auth-files").json()["files"]
        if entry["name"] == "antigravity-a.json"
    )
    call = {
        "auth_index": index,
        "method": "POST",
        "url": "https://example.com/v1internal:generateContent",
        "header": {"Authorization": "Bearer $TOKEN$"},
        "data": "{}",
    }
    reply = client.send("POST", "/api-call", body_of(call))
    assert reply.status == 400
    assert "error" in reply.json()


def test_api_call_decodes(client: Any, echo_upstream: Any) -> None:
    upstream = echo_upstream
    account = {"type": "antigravity", "access_token": "tok-123", "base_url": upstream.url}
    client.send("POST", "/auth-files?name=antigravity-w.json", body_of(account))
    index = client.send("GET", "/auth-files").json()["files"][0]["auth_index"]
    call = {
        "auth_index": index,
        "method": "POST",
        "url": upstream.url + "/v1internal:generateContent",
        "header": {"Authorization": "Bearer $TOKEN$", "Content-Type": "application/json"},
        "data": '{"model": "gemini-3-flash"}',
    }
    reply = client.send("POST", "/api-call", body_of(call))  # 30
    expect_2xx(reply, "POST /api-call")
    decode(reply.json(), API_CALL)
    assert reply.json()["status_code"] == 200
    seen = upstream.requests[-1]
    assert seen["headers"]["Authorization"] == "Bearer tok-123"
    assert seen["body"] == b'{"model": "gemini-3-flash"}'


def test_unknown_path_is_json_404(client: Any) -> None:
    reply = client.send("GET", "/no-such-route")
    assert reply.status == 404
    assert reply.json() == {"error": "not found"}

