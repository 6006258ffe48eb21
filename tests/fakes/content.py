"""Response text of the fake upstream, and JSON values built from a response schema.

A success response names the account that served it: `Hello from A.` for account "A" and
`Hello from upstream.` for the account "" (paths without an `/acct/<name>/` prefix).
"""

from __future__ import annotations

from typing import Any

#: Text appended to the response text under `SplitUtf8`, with 2-, 3- and 4-byte UTF-8 characters.
UTF8_SAMPLE = "héllo wörld ✓ 日本 🙂"


def response_text(account: str, utf8: bool = False) -> str:
    """Return the success text for `account`, with `UTF8_SAMPLE` appended when `utf8` is set."""
    text = f"Hello from {account or 'upstream'}."
    if utf8:
        return f"{text} {UTF8_SAMPLE}"
    return text


def split_text(text: str, parts: int) -> list[str]:
    """Split `text` into `parts` consecutive pieces of near-equal length.

    NOTE: pieces are empty strings when `parts` exceeds the number of characters, because
    the joined deltas must equal the response text exactly.
    """
    parts = max(1, parts)
    size, extra = divmod(len(text), parts)
    pieces = []
    start = 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def value_from_schema(schema: Any, depth: int = 0) -> Any:
    """Build a small value that matches a JSON schema or a Gemini `Schema` object.

    Strings become "x" (or the first enum value), integers and numbers 1 (or the minimum
    when that is larger), booleans true, arrays one item, and objects every listed property.
    Type names are matched case-insensitively because Gemini writes them in upper case.
    """
    if not isinstance(schema, dict) or depth > 16:
        return "x"
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return value_from_schema(options[0], depth + 1)

    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    kind = str(kind).lower()

    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: value_from_schema(sub, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        return [value_from_schema(schema.get("items") or {}, depth + 1)]
    if kind in ("integer", "number"):
        minimum = schema.get("minimum")
        if isinstance(minimum, (int, float)) and minimum > 1:
            return int(minimum) if kind == "integer" else minimum
        return 1
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "x"
