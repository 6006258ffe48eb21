"""Scalar settings, routing strategy, GET /config and the raw config.yaml routes."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from mgmt.testing import Harness, response_json


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def file_data(harness: Harness) -> dict:
    return YAML(typ="safe").load(harness.config_path.read_text())


@pytest.mark.parametrize(
    ("route", "key_path", "value"),
    [
        ("/debug", ("debug",), True),
        ("/logging-to-file", ("logging-to-file",), True),
        ("/request-log", ("request-log",), True),
        ("/usage-statistics-enabled", ("usage-statistics-enabled",), False),
        ("/request-retry", ("request-retry",), 7),
        ("/max-retry-interval", ("max-retry-interval",), 90),
        ("/quota-exceeded/switch-project", ("quota-exceeded", "switch-project"), False),
        ("/quota-exceeded/switch-preview-model", ("quota-exceeded", "switch-preview-model"), False),
        ("/proxy-url", ("proxy-url",), "http://127.0.0.1:3128"),
    ],
)
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_scalar_setting_round_trip(
    harness: Harness, route: str, key_path: tuple[str, ...], value: object, method: str
) -> None:
    response = harness.call(method, "/v0/management" + route, json={"value": value})
    assert response.status == 200
    assert response_json(response) == {"status": "ok"}

    got = response_json(harness.call("GET", "/v0/management" + route))
    assert got == {key_path[-1]: value}

    stored = file_data(harness)
    for key in key_path:
        stored = stored[key]
    assert stored == value


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/debug", {"value": 1}),
        ("/debug", {"value": "true"}),
        ("/debug", {}),
        ("/request-retry", {"value": True}),
        ("/request-retry", {"value": 2.5}),
        ("/request-retry", {"value": "3"}),
        ("/proxy-url", {"value": 5}),
        ("/debug", ["value"]),
    ],
)
def test_scalar_setting_rejects_wrong_type(harness: Harness, route: str, body: object) -> None:
    before = harness.config_path.read_bytes()
    response = harness.call("PUT", "/v0/management" + route, json=body)
    assert response.status == 400
    assert response_json(response) == {"error": "invalid body"}
    assert harness.config_path.read_bytes() == before


def test_invalid_body_bytes_rejected(harness: Harness) -> None:
    response = harness.call("PUT", "/v0/management/debug", body=b"{not json")
    assert response.status == 400


def test_out_of_range_value_names_the_key(harness: Harness) -> None:
    response = harness.call("PUT", "/v0/management/request-retry", json={"value": -1})
    assert response.status == 400
    assert "request-retry" in response_json(response)["error"]


def test_invalid_proxy_url_rejected(harness: Harness) -> None:
    response = harness.call("PUT", "/v0/management/proxy-url", json={"value": "ftp://x"})
    assert response.status == 400
    assert "proxy-url" in response_json(response)["error"]


def test_proxy_url_trailing_slash_stripped_and_delete(harness: Harness) -> None:
    harness.call("PUT", "/v0/management/proxy-url", json={"value": "socks5://127.0.0.1:1080/"})
    assert file_data(harness)["proxy-url"] == "socks5://127.0.0.1:1080"
    assert harness.call("DELETE", "/v0/management/proxy-url").status == 200
    assert file_data(harness)["proxy-url"] == ""


def test_negative_counts_normalised(harness: Harness) -> None:
    harness.call("PUT", "/v0/management/logs-max-total-size-mb", json={"value": -5})
    harness.call("PUT", "/v0/management/error-logs-max-files", json={"value": -1})
    data = file_data(harness)
    assert data["logs-max-total-size-mb"] == 0
    assert data["error-logs-max-files"] == 10


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("fill-first", "fill-first"), ("ff", "fill-first"), ("RR", "round-robin"), ("", "round-robin")],
)
def test_routing_strategy_aliases(harness: Harness, raw: str, expected: str) -> None:
    assert harness.call("PUT", "/v0/management/routing/strategy", json={"value": raw}).status == 200
    assert response_json(harness.call("GET", "/v0/management/routing/strategy")) == {
        "strategy": expected
    }
    assert harness.pool.strategy == expected


def test_legacy_routing_route(harness: Harness) -> None:
    assert harness.call("PUT", "/v0/management/routing", json={"strategy": "fill-first"}).status == 200
    assert response_json(harness.call("GET", "/v0/management/routing")) == {"strategy": "fill-first"}


def test_unknown_strategy_rejected(harness: Harness) -> None:
    response = harness.call("PUT", "/v0/management/routing/strategy", json={"value": "random"})
    assert response.status == 400
    assert response_json(response) == {"error": "invalid strategy"}


def test_setting_edit_keeps_comments(harness: Harness) -> None:
    harness.call("PUT", "/v0/management/request-retry", json={"value": 4})
    harness.call("PATCH", "/v0/management/quota-exceeded/switch-project", json={"value": False})
    text = harness.config_path.read_text()
    assert "# cliproxy test config" in text
    assert "# first key" in text


def test_get_config_hides_secrets_and_addresses(harness: Harness) -> None:
    config = response_json(harness.call("GET", "/v0/management/config"))
    for hidden in ("remote-management", "host", "port", "auth-dir"):
        assert hidden not in config
    assert config["routing-strategy"] == "round-robin"
    assert config["routing"] == {"strategy": "round-robin"}
    assert config["request-retry"] == 3
    assert config["quota-exceeded"] == {"switch-project": True, "switch-preview-model": True}
    assert config["api-keys"] == ["sk-test-one"]


def test_get_config_yaml_returns_file(harness: Harness) -> None:
    response = harness.call("GET", "/v0/management/config.yaml")
    assert response.status == 200
    assert response.content() == harness.config_path.read_bytes()
    assert response.all_headers()["Content-Type"].startswith("application/yaml")


def test_put_config_yaml_invalid_yaml(harness: Harness) -> None:
    before = harness.config_path.read_bytes()
    response = harness.call("PUT", "/v0/management/config.yaml", body=b"a: [unclosed\n")
    assert response.status == 400
    assert response_json(response)["error"] == "invalid_yaml"
    assert harness.config_path.read_bytes() == before


def test_put_config_yaml_invalid_config(harness: Harness) -> None:
    before = harness.config_path.read_bytes()
    response = harness.call("PUT", "/v0/management/config.yaml", body=b"port: 99999\n")
    assert response.status == 422
    body = response_json(response)
    assert body["error"] == "invalid_config"
    assert "port" in body["message"]
    assert harness.config_path.read_bytes() == before


def test_put_config_yaml_applies_live(harness: Harness) -> None:
    text = harness.config_path.read_text().replace("round-robin", "fill-first") + "# added\n"
    response = harness.call("PUT", "/v0/management/config.yaml", body=text.encode())
    assert response.status == 200
    assert response_json(response) == {"ok": True, "changed": ["config"]}
    assert harness.config_path.read_text() == text
    assert harness.pool.strategy == "fill-first"
    assert response_json(harness.call("GET", "/v0/management/routing/strategy")) == {
        "strategy": "fill-first"
    }


def test_wrong_method_is_405(harness: Harness) -> None:
    response = harness.call("POST", "/v0/management/debug", json={"value": True})
    assert response.status == 405
    assert "GET" in response.headers["Allow"]
