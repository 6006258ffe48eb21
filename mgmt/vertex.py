"""`POST /vertex/import`: store a Google Cloud service-account key as a Vertex account file.

Accepts the key as a raw JSON body (what Quotio sends) or as the multipart field `file` (what
CLIProxyAPI accepts). The account file is `vertex-<project_id>.json` in the auth directory.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from mgmt.authfiles import MAX_AUTH_FILE_BYTES, auth_file_path, write_auth_file
from mgmt.context import MgmtContext
from mgmt.multipart import is_multipart, parse_form
from mgmt.router import HttpError, MgmtRequest, MgmtResponse, Router

logger = logging.getLogger(__name__)

DEFAULT_LOCATION = "us-central1"
_LOCATION_PATTERN = re.compile(r"^[a-z0-9-]{1,63}$")
_REQUIRED_FIELDS = ("project_id", "client_email", "private_key")


def _upload(request: MgmtRequest) -> tuple[bytes, str | None]:
    """Return the key bytes and the `location` form field, if any."""
    content_type = request.headers.get("content-type", "")
    if not is_multipart(content_type):
        return request.body, None
    location = None
    data = None
    for part in parse_form(content_type, request.body):
        if part.name == "file":
            data = part.data
        elif part.name == "location":
            location = part.data.decode("utf-8", errors="replace").strip()
    if data is None:
        raise HttpError(400, "file required")
    return data, location


def _file_name(project_id: str) -> str:
    safe = project_id.replace("/", "_").replace("\\", "_").replace(":", "_").replace(" ", "-")
    return f"vertex-{safe.strip('.')}.json"


def import_service_account(ctx: MgmtContext, request: MgmtRequest) -> MgmtResponse:
    data, form_location = _upload(request)
    if not data:
        raise HttpError(400, "file required")
    if len(data) > MAX_AUTH_FILE_BYTES:
        raise HttpError(400, "service account file is larger than 1 MiB")
    try:
        account: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HttpError(400, "invalid json", message=str(exc)) from None
    if not isinstance(account, dict) or account.get("type") != "service_account":
        raise HttpError(400, "invalid service account")
    for field in _REQUIRED_FIELDS:
        if not isinstance(account.get(field), str) or not account[field].strip():
            if field == "project_id":
                raise HttpError(400, "project_id missing")
            raise HttpError(400, "invalid service account", message=f"{field} missing")

    location = request.query_value("location") or form_location or DEFAULT_LOCATION
    if not _LOCATION_PATTERN.match(location):
        raise HttpError(400, f"invalid location {location!r}")

    project_id = account["project_id"].strip()
    email = account["client_email"].strip()
    path = auth_file_path(ctx, _file_name(project_id))
    record = {
        "type": "vertex",
        "service_account": account,
        "project_id": project_id,
        "email": email,
        "location": location,
        "label": f"{project_id} ({location})",
    }
    write_auth_file(ctx, path, (json.dumps(record, indent=2) + "\n").encode())
    ctx.reload_accounts()
    logger.info("management API: imported Vertex service account as %s", path.name)
    return MgmtResponse(
        200,
        {
            "status": "ok",
            "auth-file": str(path),
            "project_id": project_id,
            "email": email,
            "location": location,
        },
    )


def register(router: Router, ctx: MgmtContext) -> None:
    """Add the Vertex import route to `router`."""
    router.add("POST", "/vertex/import", lambda request: import_service_account(ctx, request))
