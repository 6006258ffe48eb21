"""Model ids listed for accounts that have no `models:` list of their own.

An account without a `models:` list serves every model whose name belongs to its family
(`claude-*`, `gpt-*`/`o*`/`codex*`, `gemini-*`); the ids below are only what `/v1/models` lists
for such accounts, so clients and Quotio have names to offer.
"""

from pool.account import Family

CATALOG: dict[Family, tuple[str, ...]] = {
    Family.CLAUDE: (
        "claude-opus-4-8",
        "claude-opus-4-6",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
    ),
    Family.CODEX: (
        "gpt-5-codex",
        "gpt-5.1-codex",
        "gpt-5",
        "gpt-5-mini",
    ),
    Family.GEMINI: (
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-3.1-pro-preview",
        "gemini-3.5-flash-lite",
        "gemini-3.8-flash",
    ),
}

OWNERS: dict[Family, str] = {
    Family.CLAUDE: "anthropic",
    Family.CODEX: "openai",
    Family.GEMINI: "google",
    Family.OPENAI_COMPAT: "openai-compatible",
}
