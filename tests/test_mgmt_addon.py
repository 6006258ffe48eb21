"""The mitmproxy addon in-process: local responses, socket peer address, body limit, options."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import keyring.backends.fail
import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow, tutils

from addons.management import Management, is_management_path
from addons.runtime import Runtime
from config import ConfigFile
import mgmt.keys
from mgmt.testing import MINIMAL_CONFIG


@pytest.fixture
def addon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Management:
    # No OS keyring in tests: the generated key goes to the file beside the config.
    monkeypatch.setattr(mgmt.keys.keyring, "get_keyring", keyring.backends.fail.Keyring)
    monkeypatch.delenv("MANAGEMENT_PASSWORD", raising=False)
    (tmp_path / "config.yaml").write_text(MINIMAL_CONFIG)
    runtime = Runtime(ConfigFile(tmp_path / "config.yaml"))
    runtime.load()
    return Management(runtime)


def management_flow(path: str, *, peer: str = "127.0.0.1", key: str = "", **headers: str):
    flow = tflow.tflow(req=tutils.treq(method=b"GET", path=path.encode(), content=b""))
    flow.client_conn.peername = (peer, 50000)
    if key:
        flow.request.headers["Authorization"] = f"Bearer {key}"
    for name, value in headers.items():
        flow.request.headers[name.replace("_", "-")] = value
    return flow


def generated_key(addon: Management) -> str:
    addon.build_service()
    return (addon.runtime.config_file.path.parent / "management-key").read_text().strip()


def run(addon: Management, flow) -> None:
    addon.requestheaders(flow)
    if flow.response is None:
        pending = addon.request(flow)
        if pending is not None:
            asyncio.run(pending)


def test_management_path_matching() -> None:
    assert is_management_path("/v0/management/debug?x=1")
    assert is_management_path("/v0/management")
    assert not is_management_path("/v1/models")


def test_answers_locally_with_key(addon: Management) -> None:
    with taddons.context(addon):
        key = generated_key(addon)
        flow = management_flow("/v0/management/debug", key=key)
        run(addon, flow)
    assert flow.response.status_code == 200
    assert json.loads(flow.response.content) == {"debug": False}
    assert flow.response.headers["Content-Type"].startswith("application/json")


def test_peer_address_from_socket(addon: Management) -> None:
    with taddons.context(addon):
        key = generated_key(addon)
        flow = management_flow(
            "/v0/management/debug", peer="203.0.113.9", key=key, X_Forwarded_For="127.0.0.1"
        )
        run(addon, flow)
    assert flow.response.status_code == 403
    assert json.loads(flow.response.content) == {"error": "remote management disabled"}


def test_ipv4_mapped_loopback_peer(addon: Management) -> None:
    with taddons.context(addon):
        key = generated_key(addon)
        flow = management_flow("/v0/management/debug", peer="::ffff:127.0.0.1", key=key)
        run(addon, flow)
    assert flow.response.status_code == 200


def test_oversized_body_rejected_early(addon: Management) -> None:
    with taddons.context(addon):
        flow = management_flow("/v0/management/auth-files", Content_Length=str(17 * 1024 * 1024))
        addon.requestheaders(flow)
    assert flow.response.status_code == 413


def test_other_paths_untouched(addon: Management) -> None:
    with taddons.context(addon):
        flow = management_flow("/v1/models")
        run(addon, flow)
    assert flow.response is None


def test_release_url_option_validated(addon: Management) -> None:
    with taddons.context(addon) as context:
        with pytest.raises(exceptions.OptionsError):
            context.configure(addon, cliproxy_release_url="ftp://example.invalid/x")
        context.configure(addon, cliproxy_release_url="http://127.0.0.1:9/latest")
        assert addon.build_service().ctx.release_url == "http://127.0.0.1:9/latest"
        with pytest.raises(exceptions.OptionsError):
            context.configure(addon, cliproxy_management_threads=0)
