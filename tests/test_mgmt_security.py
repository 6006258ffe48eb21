"""Access control of the management API: loopback rule, lockout, key separation, CORS."""

from __future__ import annotations

from pathlib import Path

import pytest

from mgmt.security import FailedAuthTracker, format_duration, is_loopback, is_own_origin
from mgmt.testing import MINIMAL_CONFIG, Harness, MgmtProxy, response_json


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def harness(tmp_path: Path, clock: FakeClock) -> Harness:
    return Harness(tmp_path, tracker=FailedAuthTracker(clock=clock))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.5", False),
        ("192.168.1.2", False),
        ("::ffff:10.0.0.5", False),
        ("fe80::1%eth0", False),
        ("", False),
        ("localhost", False),
    ],
)
def test_is_loopback(address: str, expected: bool) -> None:
    assert is_loopback(address) is expected


def test_five_wrong_keys_lock_out(harness: Harness, clock: FakeClock) -> None:
    for _ in range(5):
        assert harness.call("GET", "/v0/management/debug", key="wrong").status == 401
    locked = harness.call("GET", "/v0/management/debug")
    assert locked.status == 403
    message = response_json(locked)["error"]
    assert "30m0s" in message

    clock.now += 29 * 60
    still = harness.call("GET", "/v0/management/debug")
    assert still.status == 403
    assert "1m0s" in response_json(still)["error"]

    clock.now += 61
    assert harness.call("GET", "/v0/management/debug").status == 200


def test_lockout_is_per_address(harness: Harness) -> None:
    for _ in range(5):
        harness.call("GET", "/v0/management/debug", key="wrong", peer_ip="127.0.0.1")
    assert harness.call("GET", "/v0/management/debug", peer_ip="127.0.0.1").status == 403
    assert harness.call("GET", "/v0/management/debug", peer_ip="::1").status == 200


def test_missing_key_is_401_and_not_counted(harness: Harness) -> None:
    for _ in range(10):
        response = harness.call("GET", "/v0/management/debug", key=None)
        assert response.status == 401
        assert response_json(response) == {"error": "missing management key"}
    assert harness.call("GET", "/v0/management/debug").status == 200


def test_success_resets_failure_count(harness: Harness) -> None:
    for _ in range(4):
        harness.call("GET", "/v0/management/debug", key="wrong")
    assert harness.call("GET", "/v0/management/debug").status == 200
    for _ in range(4):
        harness.call("GET", "/v0/management/debug", key="wrong")
    assert harness.call("GET", "/v0/management/debug").status == 200


def test_remote_refused_despite_forwarded_headers(harness: Harness) -> None:
    forged = {
        "X-Forwarded-For": "127.0.0.1",
        "X-Real-IP": "127.0.0.1",
        "Forwarded": "for=127.0.0.1",
    }
    response = harness.call("GET", "/v0/management/debug", headers=forged, peer_ip="203.0.113.7")
    assert response.status == 403
    assert response_json(response) == {"error": "remote management disabled"}


def test_remote_refusal_is_not_counted(harness: Harness) -> None:
    for _ in range(6):
        harness.call("GET", "/v0/management/debug", key="wrong", peer_ip="203.0.113.7")
    config = harness.config_path.read_text().replace("allow-remote: false", "allow-remote: true")
    harness.call("PUT", "/v0/management/config.yaml", body=config.encode())
    assert harness.call("GET", "/v0/management/debug", peer_ip="203.0.113.7").status == 200


def test_allow_remote_opens_remote_access(harness: Harness) -> None:
    config = harness.config_path.read_bytes().replace(b"allow-remote: false", b"allow-remote: true")
    assert harness.call("PUT", "/v0/management/config.yaml", body=config).status == 200
    assert harness.call("GET", "/v0/management/debug", peer_ip="203.0.113.7").status == 200
    assert harness.call("GET", "/v0/management/debug", key="x", peer_ip="203.0.113.7").status == 401


def test_proxy_key_rejected_on_management_routes(harness: Harness) -> None:
    response = harness.call("GET", "/v0/management/api-keys", key="sk-test-one")
    assert response.status == 401
    assert response_json(response) == {"error": "invalid management key"}


def test_management_key_cannot_become_proxy_key(harness: Harness) -> None:
    response = harness.call("PUT", "/v0/management/api-keys", json=[harness.management_key])
    assert response.status == 400
    assert harness.management_key not in harness.config_path.read_text()


def test_x_management_key_header_accepted(harness: Harness) -> None:
    response = harness.call(
        "GET", "/v0/management/debug", key=None, headers={"X-Management-Key": harness.management_key}
    )
    assert response.status == 200


def test_foreign_origin_preflight_gets_no_allow_origin(harness: Harness) -> None:
    response = harness.call(
        "OPTIONS",
        "/v0/management/api-keys",
        key=None,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PUT"},
    )
    assert response.status == 204
    assert "Access-Control-Allow-Origin" not in response.headers


def test_own_origin_preflight_is_allowed(harness: Harness) -> None:
    response = harness.call(
        "OPTIONS",
        "/v0/management/api-keys",
        key=None,
        headers={"Origin": "http://127.0.0.1:8317", "Access-Control-Request-Method": "PUT"},
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8317"


def test_cross_site_write_rejected_even_with_key(harness: Harness) -> None:
    response = harness.call(
        "PUT",
        "/v0/management/debug",
        json={"value": True},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status == 403
    assert response_json(harness.call("GET", "/v0/management/debug")) == {"debug": False}


def test_cross_site_rejection_not_counted(harness: Harness) -> None:
    for _ in range(6):
        harness.call(
            "PUT",
            "/v0/management/debug",
            json={"value": True},
            key="wrong",
            headers={"Origin": "https://evil.example"},
        )
    assert harness.call("GET", "/v0/management/debug").status == 200


def test_own_origin_write_allowed(harness: Harness) -> None:
    response = harness.call(
        "PUT",
        "/v0/management/debug",
        json={"value": True},
        headers={"Origin": "http://localhost:8317"},
    )
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:8317"


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("http://127.0.0.1:8317", True),
        ("http://localhost:8317", True),
        ("http://[::1]:8317", True),
        ("http://127.0.0.1:8318", False),
        ("http://127.0.0.1", False),
        ("https://evil.example:8317", False),
        ("null", False),
        ("file://", False),
    ],
)
def test_is_own_origin(origin: str, expected: bool) -> None:
    assert is_own_origin(origin, 8317) is expected


def test_format_duration() -> None:
    assert format_duration(1753) == "29m13s"
    assert format_duration(59) == "59s"
    assert format_duration(3700) == "1h1m40s"


def test_unknown_path_still_needs_key(harness: Harness) -> None:
    assert harness.call("GET", "/v0/management/nothing", key=None).status == 401
    response = harness.call("GET", "/v0/management/nothing")
    assert response.status == 404
    assert response_json(response) == {"error": "not found"}


def test_env_password_accepted(tmp_path: Path) -> None:
    harness = Harness(tmp_path, env_password="from-env-123")
    assert harness.call("GET", "/v0/management/debug", key="from-env-123").status == 200


# ---------------------------------------------------------------------------------------
# Through a real mitmdump


@pytest.fixture
def mgmt_proxy(tmp_path: Path):
    running = MgmtProxy(tmp_path / "proxy")
    yield running
    running.close()


def test_proxy_management_key_rejected_on_proxy_routes(mgmt_proxy: MgmtProxy) -> None:
    status, _, body = mgmt_proxy.request(
        "GET", "/v1/models", headers={"Authorization": f"Bearer {mgmt_proxy.management_key}"}
    )
    assert status == 401


def test_proxy_forged_forwarded_for_does_not_bypass(mgmt_proxy: MgmtProxy) -> None:
    # The test client is local, so only the lockout path can show that headers are ignored:
    # a forged client address must not move the lockout to another address.
    for _ in range(5):
        status, _, _ = mgmt_proxy.request(
            "GET",
            "/v0/management/debug",
            headers={"Authorization": "Bearer wrong", "X-Forwarded-For": "198.51.100.9"},
        )
        assert status == 401
    status, _, body = mgmt_proxy.request(
        "GET", "/v0/management/debug", headers={"Authorization": f"Bearer {mgmt_proxy.management_key}"}
    )
    assert status == 403
    assert b"Try again in" in body


def test_proxy_preflight_from_foreign_origin(mgmt_proxy: MgmtProxy) -> None:
    status, headers, _ = mgmt_proxy.request(
        "OPTIONS",
        "/v0/management/api-keys",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"},
    )
    assert status == 204
    assert not any(name.lower() == "access-control-allow-origin" for name in headers)


def test_proxy_answers_management_locally(mgmt_proxy: MgmtProxy) -> None:
    status, headers, body = mgmt_proxy.request(
        "GET", "/v0/management/nope", headers={"Authorization": f"Bearer {mgmt_proxy.management_key}"}
    )
    assert status == 404
    assert body == b'{"error": "not found"}'


def test_proxy_hashes_plaintext_secret(tmp_path: Path) -> None:
    config = MINIMAL_CONFIG.replace(
        'secret-key: ""', 'secret-key: "quotio-plain-key"  # written by Quotio'
    )
    running = MgmtProxy(tmp_path / "proxy", config)
    try:
        status, _, _ = running.request(
            "GET", "/v0/management/debug", headers={"Authorization": "Bearer quotio-plain-key"}
        )
        assert status == 200
        on_disk = running.config_path.read_text()
        assert "quotio-plain-key" not in on_disk
        assert 'secret-key: "$2b$' in on_disk
        assert "# written by Quotio" in on_disk
        assert "# cliproxy test config" in on_disk
    finally:
        running.close()
