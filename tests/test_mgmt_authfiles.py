"""`/auth-files` and `/vertex/import`: names, uploads, listing with live pool state, toggles."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from pool import Failure, FailureKind
from pool.account import Family
from mgmt.testing import Harness, response_json

CLAUDE = {
    "type": "claude",
    "email": "bob@example.com",
    "access_token": "sk-ant-oat-x",
    "refresh_token": "r",
    "last_refresh": 1767225600000,
    "priority": 2,
}


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path, catalog={Family.CLAUDE: ("claude-sonnet-4-5", "claude-opus-4-1")})


def upload(harness: Harness, name: str, document: object) -> int:
    body = json.dumps(document).encode()
    return harness.call("POST", f"/v0/management/auth-files?name={name}", body=body).status


def entries(harness: Harness) -> list[dict]:
    return response_json(harness.call("GET", "/v0/management/auth-files"))["files"]


@pytest.mark.parametrize(
    "name",
    [
        "../evil.json",
        "..%2Fevil.json",
        "sub/evil.json",
        "sub%5Cevil.json",
        "%2Fetc%2Fpasswd.json",
        ".hidden.json",
        "C:evil.json",
        "evil.txt",
        "upper.JSON",
        "",
        "a%00b.json",
    ],
)
def test_bad_names_rejected(harness: Harness, name: str) -> None:
    assert upload(harness, name, CLAUDE) == 400
    for method, path in [
        ("GET", f"/v0/management/auth-files/download?name={name}"),
        ("DELETE", f"/v0/management/auth-files?name={name}"),
        ("GET", f"/v0/management/auth-files/models?name={name}"),
    ]:
        assert harness.call(method, path).status == 400, (method, path)
    assert list(harness.auth_dir.iterdir()) == []
    assert not (harness.directory / "evil.json").exists()


def test_status_patch_rejects_traversal(harness: Harness) -> None:
    body = {"name": "../config.json", "disabled": True}
    assert harness.call("PATCH", "/v0/management/auth-files/status", json=body).status == 400


def test_oversize_upload_rejected(harness: Harness) -> None:
    document = dict(CLAUDE, padding="x" * (1024 * 1024))
    assert upload(harness, "claude-big.json", document) == 400
    assert not (harness.auth_dir / "claude-big.json").exists()


@pytest.mark.parametrize("document", [[1, 2], {"email": "x"}, {"type": "martian"}, "text"])
def test_upload_requires_object_with_known_type(harness: Harness, document: object) -> None:
    assert upload(harness, "a.json", document) == 400


def test_upload_not_json_rejected(harness: Harness) -> None:
    response = harness.call("POST", "/v0/management/auth-files?name=a.json", body=b"{nope")
    assert response.status == 400


def test_upload_written_0600_and_loaded(harness: Harness) -> None:
    assert upload(harness, "claude-bob.json", CLAUDE) == 200
    path = harness.auth_dir / "claude-bob.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_bytes()) == CLAUDE
    assert [account.label for account in harness.pool.accounts()] == ["claude-bob.json"]


def test_list_entry_shape(harness: Harness) -> None:
    upload(harness, "claude-bob.json", CLAUDE)
    (entry,) = entries(harness)
    path = harness.auth_dir / "claude-bob.json"
    assert entry["id"] == entry["name"] == "claude-bob.json"
    assert entry["provider"] == "claude"
    assert entry["status"] == "ready"
    assert entry["disabled"] is False
    assert entry["unavailable"] is False
    assert entry["email"] == entry["label"] == "bob@example.com"
    assert entry["account_type"] == "oauth"
    assert entry["source"] == "file"
    assert entry["path"] == str(path)
    assert entry["auth_index"] == __import__("hashlib").sha256(
        f"claude:{path.resolve()}".encode()
    ).hexdigest()[:16]
    assert entry["last_refresh"] == "2026-01-01T00:00:00Z"
    assert isinstance(entry["created_at"], str)
    assert isinstance(entry["updated_at"], str)
    assert entry["priority"] == 2


def test_cooling_account_reports_until_and_why(harness: Harness) -> None:
    upload(harness, "claude-bob.json", CLAUDE)
    (account,) = harness.pool.accounts()
    failure = Failure(FailureKind.RATE_LIMITED, 429, "rate limited by upstream", cooldown=120)
    harness.pool.mark_failure(account, "claude-sonnet-4-5", failure)
    (entry,) = entries(harness)
    assert entry["status"] == "cooling"
    assert entry["unavailable"] is True
    assert "cooling until" in entry["status_message"]
    assert "rate limited by upstream" in entry["status_message"]
    assert entry["next_retry_after"].endswith("Z")


def test_unsupported_type_listed_as_error(harness: Harness) -> None:
    upload(harness, "kiro-x.json", {"type": "kiro", "access_token": "t"})
    (entry,) = entries(harness)
    assert entry["status"] == "error"
    assert entry["unavailable"] is True
    assert "kiro" in entry["status_message"]


def test_skipped_file_reports_reason(harness: Harness) -> None:
    upload(harness, "claude-empty.json", {"type": "claude", "email": "e@example.com"})
    (entry,) = entries(harness)
    assert entry["status"] == "error"
    assert "neither access_token nor refresh_token" in entry["status_message"]


def test_broken_file_listed_as_error(harness: Harness) -> None:
    (harness.auth_dir / "broken.json").write_text("{oops")
    (entry,) = entries(harness)
    assert entry["status"] == "error"
    assert entry["provider"] == "unknown"


def test_hidden_and_symlinked_files_not_listed(harness: Harness, tmp_path: Path) -> None:
    (harness.auth_dir / ".oauth-claude-x.json").write_text("{}")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(CLAUDE))
    (harness.auth_dir / "link.json").symlink_to(outside)
    assert entries(harness) == []
    download = harness.call("GET", "/v0/management/auth-files/download?name=link.json")
    assert download.status == 404


def test_disable_toggle_applies_live(harness: Harness) -> None:
    upload(harness, "claude-bob.json", CLAUDE)
    body = {"name": "claude-bob.json", "disabled": True}
    response = harness.call("PATCH", "/v0/management/auth-files/status", json=body)
    assert response_json(response) == {"status": "ok", "disabled": True}
    (account,) = harness.pool.accounts()
    assert account.disabled is True
    stored = json.loads((harness.auth_dir / "claude-bob.json").read_text())
    assert stored["disabled"] is True
    assert stored["email"] == CLAUDE["email"]
    (entry,) = entries(harness)
    assert (entry["status"], entry["disabled"]) == ("disabled", True)

    harness.call("PATCH", "/v0/management/auth-files/status", json={"name": "claude-bob.json", "disabled": False})
    assert harness.pool.accounts()[0].disabled is False


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"disabled": True}, "name is required"),
        ({"name": "claude-bob.json"}, "disabled is required"),
        ({"name": "claude-bob.json", "disabled": "yes"}, "disabled is required"),
    ],
)
def test_status_patch_validation(harness: Harness, body: dict, error: str) -> None:
    upload(harness, "claude-bob.json", CLAUDE)
    response = harness.call("PATCH", "/v0/management/auth-files/status", json=body)
    assert response.status == 400
    assert response_json(response) == {"error": error}


def test_status_patch_unknown_file(harness: Harness) -> None:
    body = {"name": "none.json", "disabled": True}
    assert harness.call("PATCH", "/v0/management/auth-files/status", json=body).status == 404


def test_download_returns_bytes(harness: Harness) -> None:
    upload(harness, "claude-bob.json", CLAUDE)
    response = harness.call("GET", "/v0/management/auth-files/download?name=claude-bob.json")
    assert response.status == 200
    assert response.content() == (harness.auth_dir / "claude-bob.json").read_bytes()
    assert "attachment" in response.headers["Content-Disposition"]
    missing = harness.call("GET", "/v0/management/auth-files/download?name=none.json")
    assert missing.status == 404


def test_delete_one_many_all(harness: Harness) -> None:
    for name in ("a.json", "b.json", "c.json", "d.json"):
        upload(harness, name, CLAUDE)
    assert harness.call("DELETE", "/v0/management/auth-files?name=a.json").status == 200
    response = harness.call("DELETE", "/v0/management/auth-files?name=b.json&name=c.json")
    assert response_json(response) == {"status": "ok", "deleted": 2, "files": ["b.json", "c.json"]}
    assert harness.call("DELETE", "/v0/management/auth-files?name=a.json").status == 404
    (harness.auth_dir / "notes.txt").write_text("keep")
    response = harness.call("DELETE", "/v0/management/auth-files?all=true")
    assert response_json(response) == {"status": "ok", "deleted": 1}
    assert [path.name for path in harness.auth_dir.iterdir()] == ["notes.txt"]
    assert harness.pool.accounts() == []


def test_multipart_upload(harness: Harness) -> None:
    boundary = "XyZ"
    parts = []
    for name in ("claude-one.json", "claude-two.json", "../bad.json"):
        parts.append(
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/json\r\n\r\n{json.dumps(CLAUDE)}\r\n"
        )
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    response = harness.call(
        "POST",
        "/v0/management/auth-files",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status == 207
    result = response_json(response)
    assert result["files"] == ["claude-one.json", "claude-two.json"]
    assert result["failed"] == [{"name": "../bad.json", "error": "invalid name"}]
    assert sorted(path.name for path in harness.auth_dir.iterdir()) == [
        "claude-one.json",
        "claude-two.json",
    ]


def test_models_for_account(harness: Harness) -> None:
    upload(harness, "claude-bob.json", CLAUDE)
    response = harness.call("GET", "/v0/management/auth-files/models?name=claude-bob.json")
    models = response_json(response)["models"]
    assert [model["id"] for model in models] == ["claude-sonnet-4-5", "claude-opus-4-1"]
    assert all(model["owned_by"] == "claude" for model in models)
    unknown = harness.call("GET", "/v0/management/auth-files/models?name=none.json")
    assert response_json(unknown) == {"models": []}


SERVICE_ACCOUNT = {
    "type": "service_account",
    "project_id": "my-proj",
    "client_email": "sa@my-proj.iam.gserviceaccount.com",
    "private_key": "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n",
}


def test_vertex_import_raw(harness: Harness) -> None:
    response = harness.call("POST", "/v0/management/vertex/import", json=SERVICE_ACCOUNT)
    assert response.status == 200
    result = response_json(response)
    assert result["project_id"] == "my-proj"
    assert result["location"] == "us-central1"
    stored = json.loads((harness.auth_dir / "vertex-my-proj.json").read_text())
    assert stored["type"] == "vertex"
    assert stored["service_account"] == SERVICE_ACCOUNT
    assert stat.S_IMODE((harness.auth_dir / "vertex-my-proj.json").stat().st_mode) == 0o600


def test_vertex_import_multipart(harness: Harness) -> None:
    boundary = "b0"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"location\"\r\n\r\neurope-west4\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"sa.json\"\r\n"
        f"Content-Type: application/json\r\n\r\n{json.dumps(SERVICE_ACCOUNT)}\r\n--{boundary}--\r\n"
    ).encode()
    response = harness.call(
        "POST",
        "/v0/management/vertex/import",
        body=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status == 200
    assert response_json(response)["location"] == "europe-west4"


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"type": "authorized_user"}, "invalid service account"),
        (dict(SERVICE_ACCOUNT, project_id=""), "project_id missing"),
        (dict(SERVICE_ACCOUNT, project_id="../../etc"), "invalid name"),
    ],
)
def test_vertex_import_rejects(harness: Harness, document: dict, error: str) -> None:
    response = harness.call("POST", "/v0/management/vertex/import", json=document)
    assert response.status == 400
    assert response_json(response)["error"] == error
    assert list(harness.auth_dir.iterdir()) == []
