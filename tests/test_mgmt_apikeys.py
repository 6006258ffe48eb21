"""`/api-keys` edits: semantics, comment preservation, parallel edits and crash safety."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from config import ConfigFile
from mgmt.testing import Harness, response_json

ROOT = Path(__file__).resolve().parents[1]

COMMENTED = """\
# top comment
host: "127.0.0.1"
port: 8317
auth-dir: "auths"
# proxy keys for clients
api-keys:
  - "key-a"  # laptop
  - "key-b"
  - "key-c"
# after the keys
debug: false
"""


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path, COMMENTED)


def keys_on_disk(path: Path) -> list[str]:
    return YAML(typ="safe").load(path.read_text()).get("api-keys") or []


def listed(harness: Harness) -> list[str]:
    return response_json(harness.call("GET", "/v0/management/api-keys"))["api-keys"]


def test_put_bare_array_replaces(harness: Harness) -> None:
    assert harness.call("PUT", "/v0/management/api-keys", json=["x1", "x2", "x1"]).status == 200
    assert listed(harness) == ["x1", "x2"]
    assert keys_on_disk(harness.config_path) == ["x1", "x2"]


def test_put_items_object(harness: Harness) -> None:
    assert harness.call("PUT", "/v0/management/api-keys", json={"items": ["y"]}).status == 200
    assert listed(harness) == ["y"]


@pytest.mark.parametrize("body", [{"a": 1}, ["ok", 5], "k", ["has space"], [""]])
def test_put_rejects_invalid(harness: Harness, body: object) -> None:
    assert harness.call("PUT", "/v0/management/api-keys", json=body).status == 400
    assert listed(harness) == ["key-a", "key-b", "key-c"]


def test_patch_old_new(harness: Harness) -> None:
    assert harness.call("PATCH", "/v0/management/api-keys", json={"old": "key-b", "new": "key-z"}).status == 200
    assert listed(harness) == ["key-a", "key-z", "key-c"]


def test_patch_unknown_old_appends(harness: Harness) -> None:
    harness.call("PATCH", "/v0/management/api-keys", json={"old": "nope", "new": "key-d"})
    assert listed(harness) == ["key-a", "key-b", "key-c", "key-d"]


def test_patch_index_value(harness: Harness) -> None:
    harness.call("PATCH", "/v0/management/api-keys", json={"index": 0, "value": "first"})
    assert listed(harness) == ["first", "key-b", "key-c"]


def test_patch_missing_fields(harness: Harness) -> None:
    response = harness.call("PATCH", "/v0/management/api-keys", json={"old": "key-a"})
    assert response.status == 400
    assert response_json(response) == {"error": "missing fields"}


def test_delete_by_value_and_index(harness: Harness) -> None:
    assert harness.call("DELETE", "/v0/management/api-keys?value=key-b").status == 200
    assert listed(harness) == ["key-a", "key-c"]
    assert harness.call("DELETE", "/v0/management/api-keys?index=0").status == 200
    assert listed(harness) == ["key-c"]
    response = harness.call("DELETE", "/v0/management/api-keys")
    assert response.status == 400
    assert response_json(response) == {"error": "missing index or value"}


def test_delete_percent_encoded_value(harness: Harness) -> None:
    harness.call("PUT", "/v0/management/api-keys", json=["a+b/c=="])
    assert harness.call("DELETE", "/v0/management/api-keys?value=a%2Bb%2Fc%3D%3D").status == 200
    assert listed(harness) == []


def test_edits_keep_comments(harness: Harness) -> None:
    harness.call("DELETE", "/v0/management/api-keys?value=key-c")
    text = harness.config_path.read_text()
    for comment in ("# top comment", "# proxy keys for clients", "# laptop", "# after the keys"):
        assert comment in text
    assert keys_on_disk(harness.config_path) == ["key-a", "key-b"]


def test_emptied_list_keeps_comments_and_parses(harness: Harness) -> None:
    assert harness.call("PUT", "/v0/management/api-keys", json=[]).status == 200
    text = harness.config_path.read_text()
    data = YAML(typ="safe").load(text)
    assert data["api-keys"] == []
    assert data["debug"] is False
    for comment in ("# top comment", "laptop", "after the keys"):
        assert comment in text
    assert harness.call("PUT", "/v0/management/api-keys", json=["again"]).status == 200
    assert keys_on_disk(harness.config_path) == ["again"]


def test_edit_applies_live(harness: Harness) -> None:
    harness.call("PUT", "/v0/management/api-keys", json=["live-key"])
    assert harness.config.current().api_keys == ("live-key",)


def test_parallel_edits_all_land(harness: Harness, tmp_path: Path) -> None:
    # Two independent writers on one file, as a CLI command and the running proxy would be.
    second = Harness(tmp_path)
    new_keys = [f"parallel-{index:02d}" for index in range(50)]

    def add(index: int) -> int:
        writer = harness if index % 2 else second
        body = {"old": f"absent-{index}", "new": new_keys[index]}
        return writer.call("PATCH", "/v0/management/api-keys", json=body).status

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(add, range(50)))

    assert statuses == [200] * 50
    on_disk = keys_on_disk(harness.config_path)
    assert set(new_keys) <= set(on_disk)
    assert on_disk[:3] == ["key-a", "key-b", "key-c"]
    text = harness.config_path.read_text()
    for comment in ("# top comment", "# proxy keys for clients", "# laptop", "# after the keys"):
        assert comment in text
    ConfigFile(harness.config_path).load()


_WRITER = """\
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
from mgmt.testing import Harness

harness = Harness(Path({directory!r}))
print("ready", flush=True)
index = 0
while True:
    index += 1
    harness.call("PATCH", "/v0/management/api-keys", json={{"old": "absent", "new": f"k{{index}}"}})
    if index % 5 == 0:
        harness.call("PUT", "/v0/management/api-keys", json=["key-a", f"k{{index}}"])
"""


def test_killed_writer_never_corrupts(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(COMMENTED)
    script = _WRITER.format(root=str(ROOT), directory=str(tmp_path))
    rng = random.Random(1234)
    for _round in range(20):
        child = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready", child.stderr.read()
        time.sleep(rng.uniform(0.01, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()

        config = ConfigFile(tmp_path / "config.yaml").load()
        assert "key-a" in config.api_keys
        text = (tmp_path / "config.yaml").read_text()
        assert "# top comment" in text
        assert "# after the keys" in text
