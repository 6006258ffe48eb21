"""Decoding `multipart/form-data` request bodies (file uploads) with the standard library."""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass

from mgmt.router import HttpError


@dataclass(frozen=True)
class FormPart:
    """One form field: `filename` is None for plain (non-file) fields."""

    name: str
    filename: str | None
    data: bytes


def is_multipart(content_type: str) -> bool:
    """Return True for a `multipart/form-data` content type."""
    return content_type.split(";", 1)[0].strip().lower() == "multipart/form-data"


def parse_form(content_type: str, body: bytes) -> list[FormPart]:
    """Split a multipart/form-data body into its parts.

    Raises HttpError(400) when the boundary is missing or the body is not multipart.
    """
    if "boundary=" not in content_type.lower():
        raise HttpError(400, "invalid multipart form: missing boundary")
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise HttpError(400, "invalid multipart form: body is not multipart")

    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        parts.append(
            FormPart(
                name=name,
                filename=part.get_filename(),
                data=payload if isinstance(payload, bytes) else b"",
            )
        )
    return parts
