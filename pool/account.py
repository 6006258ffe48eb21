"""Accounts: one upstream credential each, with the models it serves.

An account comes from an OAuth file in the auth directory or from an API-key entry in the
config. Its `kind` decides how requests are sent upstream (see `providers.upstreams`); its
model rules decide which requested model names it serves and what name the upstream receives.
"""

import fnmatch
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from config import ModelMapping


class UpstreamKind(StrEnum):
    """The upstream protocol and credential type of an account."""

    CLAUDE_OAUTH = "claude-oauth"
    CLAUDE_KEY = "claude-api-key"
    CODEX_OAUTH = "codex-oauth"
    CODEX_KEY = "codex-api-key"
    GEMINI_KEY = "gemini-api-key"
    GEMINI_CLI = "gemini-cli"
    OPENAI_COMPAT = "openai-compatibility"


class Family(StrEnum):
    """A model family: which provider's model names an account serves by default."""

    CLAUDE = "claude"
    CODEX = "codex"
    GEMINI = "gemini"
    OPENAI_COMPAT = "openai-compatibility"


FAMILY_OF_KIND: dict[UpstreamKind, Family] = {
    UpstreamKind.CLAUDE_OAUTH: Family.CLAUDE,
    UpstreamKind.CLAUDE_KEY: Family.CLAUDE,
    UpstreamKind.CODEX_OAUTH: Family.CODEX,
    UpstreamKind.CODEX_KEY: Family.CODEX,
    UpstreamKind.GEMINI_KEY: Family.GEMINI,
    UpstreamKind.GEMINI_CLI: Family.GEMINI,
    UpstreamKind.OPENAI_COMPAT: Family.OPENAI_COMPAT,
}

_FAMILY_PREFIXES: tuple[tuple[str, Family], ...] = (
    ("claude", Family.CLAUDE),
    ("gpt-", Family.CODEX),
    ("gpt5", Family.CODEX),
    ("codex", Family.CODEX),
    ("chatgpt", Family.CODEX),
    ("o1", Family.CODEX),
    ("o3", Family.CODEX),
    ("o4", Family.CODEX),
    ("gemini", Family.GEMINI),
)


def family_of_model(model: str) -> Family | None:
    """Guess the family of a model name from its well-known prefix (claude-, gpt-, gemini-)."""
    name = model.lower().rsplit("/", 1)[-1]
    for prefix, family in _FAMILY_PREFIXES:
        if name.startswith(prefix):
            return family
    return None


def matches_pattern(model: str, pattern: str) -> bool:
    """Match a model against an `excluded-models` pattern: exact, `pre*`, `*suf` or `*sub*`."""
    return fnmatch.fnmatchcase(model.lower(), pattern.lower())


@dataclass
class Account:
    """One upstream credential in the pool.

    `secret` is the API key or OAuth access token; it is never logged or shown (`label` is
    what logs and the management API show).
    """

    id: str
    label: str
    kind: UpstreamKind
    secret: str
    base_url: str
    source: str  # "file" or "config"
    path: Path | None = None
    headers: dict[str, str] = field(default_factory=dict)
    proxy_url: str = ""
    models: tuple[ModelMapping, ...] = ()
    excluded_models: tuple[str, ...] = ()
    priority: int = 0
    prefix: str = ""
    disabled: bool = False
    email: str = ""
    account_id: str = ""
    project_id: str = ""
    refresh_token: str = ""
    expires_at: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> Family:
        return FAMILY_OF_KIND[self.kind]

    @property
    def provider(self) -> str:
        """The provider name shown to users and Quotio (`claude`, `codex`, `gemini`, ...)."""
        if self.kind is UpstreamKind.GEMINI_CLI:
            return "gemini-cli"
        return self.family.value

    @property
    def is_oauth(self) -> bool:
        return self.kind in (
            UpstreamKind.CLAUDE_OAUTH,
            UpstreamKind.CODEX_OAUTH,
            UpstreamKind.GEMINI_CLI,
        )

    def upstream_model(self, requested: str) -> str | None:
        """Return the upstream model name for `requested`, or None if this account lacks it."""
        model = requested
        if self.prefix and model.startswith(self.prefix + "/"):
            model = model[len(self.prefix) + 1 :]

        if self.models:
            upstream = None
            for mapping in self.models:
                if mapping.alias == model:
                    upstream = mapping.name
                    break
            if upstream is None:
                for mapping in self.models:
                    if mapping.name == model:
                        upstream = mapping.name
                        break
            if upstream is None:
                return None
        elif self.kind is UpstreamKind.OPENAI_COMPAT:
            # OpenAI-compatible providers serve only the models their entry lists.
            return None
        elif family_of_model(model) is not self.family:
            return None
        else:
            upstream = model

        for pattern in self.excluded_models:
            if matches_pattern(model, pattern) or matches_pattern(upstream, pattern):
                return None
        return upstream

    def listed_models(self, catalog: dict[Family, tuple[str, ...]]) -> list[str]:
        """Return the client-visible model ids of this account, prefixed forms included."""
        if self.models:
            names = [mapping.alias for mapping in self.models]
        else:
            names = list(catalog.get(self.family, ()))
        visible = [
            name
            for name in names
            if not any(matches_pattern(name, pattern) for pattern in self.excluded_models)
        ]
        if self.prefix:
            visible += [f"{self.prefix}/{name}" for name in visible]
        return visible
