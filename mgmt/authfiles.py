"""`/auth-files`: list, upload, download, delete and enable/disable OAuth account files.

An auth-file name is a plain `*.json` file name directly inside the auth directory. Names with
path separators, `..`, a drive letter, a leading dot or control characters are rejected with
400, and so are symbolic links, so no request reaches a file outside the directory. Writes are
atomic with mode 0600 and the pool re-reads the directory right after each change.
"""

from __future__ import annotations

import json
import logging
import stat
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.atomic import atomic_write
from mgmt.context import MgmtContext
from mgmt.multipart import is_multipart, parse_form
from mgmt.router import HttpError, MgmtRequest, MgmtResponse, Router, ok
from pool import AccountState, auth_index

logger = logging.getLogger(__name__)

MAX_AUTH_FILE_BYTES = 1024 * 1024
# A multipart upload may carry several files of up to 1 MiB each.
MAX_MULTIPART_BYTES = 16 * MAX_AUTH_FILE_BYTES
MAX_NAME_LENGTH = 255

# Account types CLIProxyAPI and its forks write. cliproxy routes claude, codex and
# gemini(-cli); files of the other types are stored and listed for desktop apps.
KNOWN_TYPES = frozenset(
    {
        "claude",
        "codex",
        "gemini",
        "gemini-cli",
        "antigravity",
        "vertex",
        "aistudio",
        "qwen",
        "iflow",
        "kimi",
        "xai",
        "kiro",
        "github-copilot",
        "copilot",
    }
)

_LAST_REFRESH_KEYS = ("last_refresh", "lastRefresh", "last_refreshed_at", "lastRefreshedAt")

# Serialises read-modify-write of auth files within this process.
_file_lock = threading.Lock()


def validate_name(name: str | None) -> str:
    """Return `name` when it is a plain `*.json` file name, else raise HttpError(400)."""
    if not name:
        raise HttpError(400, "name is required")
    if (
        len(name) > MAX_NAME_LENGTH
        or "/" in name
        or "\\" in name
        or ":" in name
        or ".." in name
        or name.startswith(".")
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name)
    ):
        raise HttpError(400, "invalid name")
    if not name.endswith(".json"):
        raise HttpError(400, "name must end with .json (lower case)")
    return name


def auth_file_path(ctx: MgmtContext, name: str | None) -> Path:
    """Return the path of auth file `name` inside the auth directory, validating the name."""
    auth_dir = ctx.config.current().auth_dir
    path = auth_dir / validate_name(name)
    if path.parent != auth_dir:
        raise HttpError(400, "invalid name")
    return path


def _existing_file(path: Path) -> Path:
    """Return `path` when it is a regular file (not a symbolic link), else raise 404."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        raise HttpError(404, "auth file not found") from None
    if not stat.S_ISREG(mode):
        raise HttpError(404, "auth file not found")
    return path


def validate_auth_json(data: bytes) -> dict[str, Any]:
    """Decode an uploaded auth file, requiring a JSON object with a known `type`."""
    if len(data) > MAX_AUTH_FILE_BYTES:
        raise HttpError(400, "auth file is larger than 1 MiB")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError(400, f"invalid auth file: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise HttpError(400, "invalid auth file: expected a JSON object")
    file_type = document.get("type")
    if not isinstance(file_type, str) or file_type.lower() not in KNOWN_TYPES:
        known = ", ".join(sorted(KNOWN_TYPES))
        raise HttpError(
            400, f"invalid auth file: type {file_type!r} is unknown; use one of {known}"
        )
    return document


def write_auth_file(ctx: MgmtContext, path: Path, data: bytes) -> None:
    """Write `data` atomically with mode 0600; a symbolic link at `path` is rejected."""
    if path.is_symlink():
        raise HttpError(400, "invalid name")
    try:
        atomic_write(path, data, mode=0o600)
    except OSError as exc:
        logger.error("writing auth file %s failed: %s", path, exc)
        raise HttpError(500, f"failed to write auth file: {exc}") from None


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _string_time(value: Any) -> str | None:
    """Return a timestamp field as a string: numbers (Unix seconds or ms) become ISO 8601."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if value > 10**12 else value
        return _iso(seconds)
    return None


def _provider_name(file_type: str) -> str:
    # CLIProxyAPI lists `type: gemini` files as provider `gemini-cli`.
    return "gemini-cli" if file_type == "gemini" else file_type


@dataclass(frozen=True)
class _LiveState:
    status: str
    message: str
    unavailable: bool
    until: float | None = None


def _live_state(
    ctx: MgmtContext, path: Path, data: dict[str, Any] | None, problem: str
) -> _LiveState:
    if data is None:
        return _LiveState(AccountState.ERROR.value, problem, True)
    if data.get("disabled") is True:
        return _LiveState(AccountState.DISABLED.value, "disabled", False)
    if ctx.pool is None:
        return _LiveState(AccountState.READY.value, "", False)
    account = ctx.account_for_file(path)
    if account is None:
        for skipped in ctx.auth_problems():
            if skipped.path.name == path.name:
                return _LiveState(AccountState.ERROR.value, skipped.message, True)
        file_type = str(data.get("type", ""))
        return _LiveState(
            AccountState.ERROR.value,
            f"provider type {file_type!r} is not served by cliproxy",
            True,
        )
    status = ctx.pool.status(account)
    unavailable = status.state in (AccountState.COOLING, AccountState.ERROR)
    return _LiveState(status.state.value, status.message, unavailable, status.until)


def auth_file_entry(ctx: MgmtContext, path: Path) -> dict[str, Any]:
    """Return the `GET /auth-files` entry of one file (CLIProxyAPI's keys, Quotio's types)."""
    info = path.stat()
    data: dict[str, Any] | None = None
    problem = ""
    try:
        raw = path.read_bytes() if info.st_size <= MAX_AUTH_FILE_BYTES else None
        if raw is None:
            problem = "file is larger than 1 MiB"
        else:
            loaded = json.loads(raw)
            if isinstance(loaded, dict):
                data = loaded
            else:
                problem = "file does not contain a JSON object"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"file cannot be read as JSON: {exc}"

    file_type = str((data or {}).get("type") or "unknown").lower()
    provider = _provider_name(file_type)
    email = (data or {}).get("email")
    live = _live_state(ctx, path, data, problem)
    created = getattr(info, "st_birthtime", min(info.st_ctime, info.st_mtime))

    entry: dict[str, Any] = {
        "id": path.name,
        "name": path.name,
        "type": provider,
        "provider": provider,
        "status": live.status,
        "status_message": live.message,
        "disabled": bool(data and data.get("disabled") is True),
        "unavailable": live.unavailable,
        "runtime_only": False,
        "source": "file",
        "path": str(path),
        "size": info.st_size,
        "auth_index": auth_index(file_type, path),
        "account_type": "oauth",
        "created_at": _iso(created),
        "updated_at": _iso(info.st_mtime),
    }
    if isinstance(email, str) and email:
        entry["email"] = email
        entry["account"] = email
    label = (data or {}).get("label")
    entry["label"] = label if isinstance(label, str) and label else entry.get("email", provider)
    for key in _LAST_REFRESH_KEYS:
        last_refresh = _string_time((data or {}).get(key))
        if last_refresh:
            entry["last_refresh"] = last_refresh
            break
    if live.until is not None:
        entry["next_retry_after"] = _iso(live.until)
    for key in ("project_id", "prefix", "note"):
        value = (data or {}).get(key)
        if isinstance(value, str) and value:
            entry[key] = value
    priority = (data or {}).get("priority")
    if isinstance(priority, int) and not isinstance(priority, bool):
        entry["priority"] = priority
    return entry


def _auth_file_paths(ctx: MgmtContext) -> list[Path]:
    """Return the regular, non-hidden `*.json` files directly inside the auth directory."""
    auth_dir = ctx.config.current().auth_dir
    try:
        candidates = list(auth_dir.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        logger.error("listing auth directory %s failed: %s", auth_dir, exc)
        raise HttpError(500, f"failed to list auth directory: {exc}") from None
    paths = []
    for path in candidates:
        if path.name.startswith(".") or not path.name.endswith(".json"):
            continue
        try:
            if stat.S_ISREG(path.lstat().st_mode):
                paths.append(path)
        except FileNotFoundError:
            continue
    return paths


def list_auth_files(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Return `{"files": [...]}` sorted by name, optionally filtered by `name`/`auth_index`."""
    entries = []
    for path in sorted(_auth_file_paths(ctx), key=lambda p: p.name.lower()):
        try:
            entries.append(auth_file_entry(ctx, path))
        except FileNotFoundError:
            continue  # removed while listing
    name = request.query_value("name")
    if name:
        entries = [entry for entry in entries if name in (entry["name"], entry["id"])]
    wanted_index = request.query_value("auth_index")
    if wanted_index:
        entries = [entry for entry in entries if entry["auth_index"] == wanted_index]
    return MgmtResponse(200, {"files": entries})


def upload_auth_files(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Store uploaded files: multipart (any field names) or a raw JSON body with `?name=`."""
    content_type = request.headers.get("content-type", "")
    if is_multipart(content_type):
        if len(request.body) > MAX_MULTIPART_BYTES:
            raise HttpError(400, "upload is larger than 16 MiB")
        files = [part for part in parse_form(content_type, request.body) if part.filename]
        if not files:
            raise HttpError(400, "no files uploaded")
        uploads = [(part.filename or "", part.data) for part in files]
    else:
        uploads = [(request.query_value("name") or "", request.body)]

    stored: list[str] = []
    failed: list[dict[str, str]] = []
    for name, data in uploads:
        try:
            path = auth_file_path(ctx, name)
            validate_auth_json(data)
            write_auth_file(ctx, path, data)
        except HttpError as exc:
            if len(uploads) == 1:
                raise
            failed.append({"name": name, "error": exc.error})
            continue
        stored.append(path.name)
        logger.info("management API: stored auth file %s", path.name)
    if stored:
        ctx.reload_accounts()

    if len(uploads) == 1:
        return ok()
    if failed:
        return MgmtResponse(
            207, {"status": "partial", "uploaded": len(stored), "files": stored, "failed": failed}
        )
    return ok(uploaded=len(stored), files=stored)


def delete_auth_files(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Delete `?name=` (repeatable) files, or every `*.json` file with `?all=true`."""
    if request.query_value("all") in ("true", "1", "*"):
        deleted = 0
        for path in _auth_file_paths(ctx):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            deleted += 1
        ctx.reload_accounts()
        logger.info("management API: deleted all %d auth files", deleted)
        return ok(deleted=deleted)

    names = request.query.get("name") or []
    if not names:
        raise HttpError(400, "name is required")
    paths = [_existing_file(auth_file_path(ctx, name)) for name in names]
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            raise HttpError(404, "auth file not found") from None
        logger.info("management API: deleted auth file %s", path.name)
    ctx.reload_accounts()
    if len(paths) == 1:
        return ok()
    return ok(deleted=len(paths), files=[path.name for path in paths])


def download_auth_file(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Return the file's bytes as an attachment."""
    path = auth_file_path(ctx, request.query_value("name"))
    try:
        data = _existing_file(path).read_bytes()
    except HttpError:
        raise HttpError(404, "file not found") from None
    return MgmtResponse(
        200,
        body=data,
        headers={
            "Content-Type": "application/json",
            "Content-Disposition": f'attachment; filename="{path.name}"',
        },
    )


def set_auth_file_status(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Enable or disable an account: `{"name", "disabled": bool}` writes `disabled` to its file."""
    try:
        body = request.json_object()
    except HttpError:
        raise HttpError(400, "invalid request body") from None
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise HttpError(400, "name is required")
    disabled = body.get("disabled")
    if not isinstance(disabled, bool):
        raise HttpError(400, "disabled is required")
    path = auth_file_path(ctx, name)

    with _file_lock:
        try:
            document = json.loads(_existing_file(path).read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HttpError(400, f"auth file is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise HttpError(400, "auth file does not contain a JSON object")
        document["disabled"] = disabled
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        write_auth_file(ctx, path, text.encode())
    ctx.reload_accounts()
    logger.info("management API: %s auth file %s", "disabled" if disabled else "enabled", name)
    return ok(disabled=disabled)


def auth_file_models(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    """Return `{"models": [{"id", "owned_by", "type"}]}` served by the file's account."""
    path = auth_file_path(ctx, request.query_value("name"))
    account = ctx.account_for_file(path)
    if account is None:
        return MgmtResponse(200, {"models": []})
    catalog = dict(ctx.model_catalog())
    models = [
        {"id": model, "owned_by": account.provider, "type": account.provider}
        for model in account.listed_models(catalog)
    ]
    return MgmtResponse(200, {"models": models})


def register(router: Router, ctx: MgmtContext) -> None:
    """Add the `/auth-files` routes to `router`."""
    router.add("GET", "/auth-files", lambda request: list_auth_files(ctx, request))
    router.add("POST", "/auth-files", lambda request: upload_auth_files(ctx, request))
    router.add("DELETE", "/auth-files", lambda request: delete_auth_files(ctx, request))
    router.add("GET", "/auth-files/download", lambda request: download_auth_file(ctx, request))
    router.add(
        ("PATCH", "PUT"), "/auth-files/status", lambda request: set_auth_file_status(ctx, request)
    )
    router.add("GET", "/auth-files/models", lambda request: auth_file_models(ctx, request))

