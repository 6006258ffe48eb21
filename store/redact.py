"""Redaction of secrets in headers, URLs, bodies and log text.

Two mechanisms work together:
- rules by name and shape: header names, query parameter names and JSON keys that carry
  credentials, plus substrings that look like tokens (`Bearer …`, `sk-…`, Google API keys
  and access tokens, JWTs);
- `Redactor`, which replaces every known secret string (proxy keys, account tokens, the
  management key) that the runtime registers, wherever it appears.

Every writer in `store` passes its output through a `Redactor`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote_plus

logger = logging.getLogger(__name__)

REDACTED = "[REDACTED]"

# A masked value shows its first and last 4 characters only from this length on, so at
# most 8 of at least 20 characters are visible. Shorter values are masked completely.
PARTIAL_MASK_MIN_LENGTH = 20
PARTIAL_MASK_EDGE = 4

# Known secrets shorter than this are not registered, because replacing every occurrence of
# a 1-3 character string would garble the logs without protecting much.
MIN_KNOWN_SECRET_LENGTH = 4

_SECRET_HEADER_MARKERS = (
    "authorization",
    "api-key",
    "apikey",
    "token",
    "secret",
    "cookie",
    "x-goog-api-key",
    "x-management-key",
    "chatgpt-account-id",
)

_SECRET_QUERY_MARKERS = ("api_key", "api-key", "apikey", "token", "secret", "password")

# JSON keys compared after lower-casing and removing `-` and `_`, so `apiKey`, `api_key`
# and `API-KEY` all match `apikey`.
_SECRET_JSON_KEYS = frozenset(
    {
        "apikey",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "clientsecret",
        "password",
        "secret",
        "secretkey",
        "token",
    }
)

# Substrings that look like credentials in free text. Each keeps a short recognizable
# prefix and replaces the rest.
_TEXT_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]{12,}=*"), r"\1 " + REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), "sk-" + REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), "AIza" + REDACTED),
    (re.compile(r"\bya29\.[0-9A-Za-z_\-.]{16,}"), "ya29." + REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"), REDACTED),
)

_FORM_BODY = re.compile(rb"[A-Za-z0-9_.\-%+]+=[^&\s]*(?:&[A-Za-z0-9_.\-%+]+=[^&\s]*)*")


def mask_secret(value: str) -> str:
    """Mask a secret for display: `sk-a...wxyz` when long enough, else `[REDACTED]`."""
    if len(value) >= PARTIAL_MASK_MIN_LENGTH:
        return f"{value[:PARTIAL_MASK_EDGE]}...{value[-PARTIAL_MASK_EDGE:]}"
    return REDACTED


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return any(marker in lowered for marker in _SECRET_HEADER_MARKERS)


def redact_header_value(name: str, value: str) -> str:
    """Mask `value` when the header `name` carries a credential, keeping an auth scheme word."""
    if not is_secret_header(name):
        return value
    if "authorization" in name.lower():
        scheme, separator, credentials = value.strip().partition(" ")
        if separator and scheme.isalpha():
            return f"{scheme} {mask_secret(credentials.strip())}"
    return mask_secret(value.strip())


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def redact_headers(
    headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]],
) -> list[tuple[str, str]]:
    """Return the headers as (name, value) pairs in order, with credential values masked."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [
        (_text(name), redact_header_value(_text(name), _text(value))) for name, value in pairs
    ]


def is_secret_query_parameter(name: str) -> bool:
    lowered = unquote_plus(name).lower()
    return lowered == "key" or any(marker in lowered for marker in _SECRET_QUERY_MARKERS)


def redact_query(query: str) -> str:
    """Mask the values of credential parameters in a URL query string, keeping the rest as is."""
    if not query:
        return query
    parts = []
    for part in query.split("&"):
        name, separator, value = part.partition("=")
        if separator and value and is_secret_query_parameter(name):
            value = quote(mask_secret(unquote_plus(value)), safe="[].")
        parts.append(f"{name}{separator}{value}")
    return "&".join(parts)


def redact_url(url: str) -> str:
    """Mask credential query parameters of a URL or of a request target such as `/v1?key=…`."""
    base, separator, rest = url.partition("?")
    if not separator:
        return url
    query, hash_mark, fragment = rest.partition("#")
    return f"{base}?{redact_query(query)}{hash_mark}{fragment}"


def redact_text_patterns(text: str) -> str:
    """Replace token-shaped substrings (`Bearer …`, `sk-…`, JWTs, Google keys) in free text."""
    for pattern, replacement in _TEXT_SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _is_secret_json_key(key: str) -> bool:
    return key.lower().replace("-", "").replace("_", "") in _SECRET_JSON_KEYS


def _redact_json_value(value: Any) -> tuple[Any, bool]:
    """Return the value with secret fields and token-shaped strings replaced, and whether
    anything changed."""
    if isinstance(value, dict):
        changed = False
        result: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(item, str) and item and _is_secret_json_key(key):
                result[key] = REDACTED
                changed = True
                continue
            result[key], item_changed = _redact_json_value(item)
            changed = changed or item_changed
        return result, changed
    if isinstance(value, list):
        items = [_redact_json_value(item) for item in value]
        return [item for item, _ in items], any(changed for _, changed in items)
    if isinstance(value, str):
        redacted = redact_text_patterns(value)
        return redacted, redacted != value
    return value, False


def redact_json_body(body: bytes) -> bytes:
    """Redact secrets in a request or response body.

    JSON: the string value of every secret-named key (`api_key`, `apiKey`, `access_token`,
    `refresh_token`, `id_token`, `client_secret`, `password`, `secret`, `secret-key`,
    `token`) anywhere in the tree becomes `[REDACTED]`, and token-shaped substrings of other
    strings are masked. A changed document is re-serialized compactly, and an unchanged one
    is returned byte for byte. Form-encoded bodies get the query parameter rules, and any
    other text gets the token-shape rules.
    """
    if not body:
        return body
    stripped = body.lstrip()
    if stripped[:1] in (b"{", b"["):
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            document = None
        else:
            redacted, changed = _redact_json_value(document)
            if not changed:
                return body
            return json.dumps(redacted, ensure_ascii=False, separators=(",", ":")).encode()

    text = body.decode("utf-8", "surrogateescape")
    if _FORM_BODY.fullmatch(body.strip()):
        text = redact_query(text.strip())
    return redact_text_patterns(text).encode("utf-8", "surrogateescape")


class Redactor:
    """Registry of known secret strings, which it replaces with `[REDACTED]` in text and bytes.

    The runtime registers proxy keys, account tokens and the management key with
    `set_secrets`, which is safe to call from any thread. Besides the secret itself, its
    URL-encoded and JSON-escaped forms are replaced. Secrets shorter than
    `MIN_KNOWN_SECRET_LENGTH` are ignored.
    """

    def __init__(self, known_secrets: Iterable[str] = ()):
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        self._text_pattern: re.Pattern[str] | None = None
        self._bytes_pattern: re.Pattern[bytes] | None = None
        self.max_secret_bytes = 0
        self.set_secrets(known_secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        """Replace the set of known secrets."""
        variants: set[str] = set()
        ignored = 0
        for secret in secrets:
            if not secret:
                continue
            if len(secret) < MIN_KNOWN_SECRET_LENGTH:
                ignored += 1
                continue
            variants.add(secret)
            variants.add(quote(secret, safe=""))
            variants.add(secret.replace("/", "\\/"))
        if ignored:
            logger.warning(
                "%d known secrets are shorter than %d characters and are not redacted",
                ignored,
                MIN_KNOWN_SECRET_LENGTH,
            )

        ordered = sorted(variants, key=len, reverse=True)
        with self._lock:
            self._secrets = frozenset(variants)
            if ordered:
                self._text_pattern = re.compile("|".join(map(re.escape, ordered)))
                self._bytes_pattern = re.compile(
                    b"|".join(re.escape(variant.encode()) for variant in ordered)
                )
                self.max_secret_bytes = max(len(variant.encode()) for variant in ordered)
            else:
                self._text_pattern = None
                self._bytes_pattern = None
                self.max_secret_bytes = 0

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Register more secrets, keeping the known ones."""
        with self._lock:
            known = set(self._secrets)
        self.set_secrets(known | set(secrets))

    def redact_known(self, data: str) -> str:
        """Replace every known secret in `data`."""
        pattern = self._text_pattern
        return pattern.sub(REDACTED, data) if pattern is not None else data

    def redact_known_bytes(self, data: bytes) -> bytes:
        """Replace every known secret in `data`."""
        pattern = self._bytes_pattern
        return pattern.sub(REDACTED.encode(), data) if pattern is not None else data

    def redact_text(self, text: str) -> str:
        """Redact log text: known secrets, then token-shaped substrings."""
        return redact_text_patterns(self.redact_known(text))

    def redact_headers(
        self, headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]
    ) -> list[tuple[str, str]]:
        return [(name, self.redact_known(value)) for name, value in redact_headers(headers)]

    def redact_url(self, url: str) -> str:
        return self.redact_known(redact_url(url))

    def redact_body(self, body: bytes) -> bytes:
        return self.redact_known_bytes(redact_json_body(self.redact_known_bytes(body)))

    def stream(self) -> StreamRedactor:
        """Start redacting a body that arrives in chunks."""
        return StreamRedactor(self._bytes_pattern, self.max_secret_bytes)


class StreamRedactor:
    """Known-secret replacement for a body that arrives in chunks.

    A secret may be split across chunks, so up to `max_secret_bytes - 1` bytes of each chunk
    are held back until the next chunk or `finish`. Token-shape rules are not applied,
    because their matches have no length bound.
    """

    def __init__(self, pattern: re.Pattern[bytes] | None, max_secret_bytes: int):
        self._pattern = pattern
        self._hold_back = max(0, max_secret_bytes - 1)
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        """Return the redacted bytes that are safe to write after `chunk` arrives."""
        if self._pattern is None:
            return chunk
        data = self._pending + chunk
        cut = len(data) - self._hold_back
        if cut <= 0:
            self._pending = data
            return b""

        output = bytearray()
        position = 0
        for match in self._pattern.finditer(data):
            if match.start() >= cut:
                break
            output += data[position : match.start()]
            output += REDACTED.encode()
            position = match.end()
        cut = max(cut, position)
        output += data[position:cut]
        self._pending = data[cut:]
        return bytes(output)

    def finish(self) -> bytes:
        """Return the redacted bytes still held back."""
        pending, self._pending = self._pending, b""
        if self._pattern is None:
            return pending
        return self._pattern.sub(REDACTED.encode(), pending)
