"""Per-provider OAuth facts: public client ids, scopes, redirect URIs, endpoints, refresh leads.

Claude Code, Codex (ChatGPT) and the Gemini CLI each log in with their own public OAuth client.
A proxy that replaces those tools must use the same client ids and the redirect URIs
registered for them, so these values are fixed. Only the endpoint URLs can be changed, through
the config mapping

    oauth-endpoints:
      claude: {authorize-url: ..., token-url: ...}
      codex:  {authorize-url: ..., token-url: ...}
      gemini: {authorize-url: ..., token-url: ..., userinfo-url: ..., code-assist-url: ...}

so that tests can point them at a fake server. `resolve_endpoints` turns that mapping into
`Endpoints`, filling in the public defaults.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from oauth.errors import InvalidConfig


class BodyStyle(StrEnum):
    """The encoding of a token endpoint request body."""

    JSON = "json"
    FORM = "form"


@dataclass(frozen=True)
class Endpoints:
    """The URLs one provider's login and refresh talk to.

    `userinfo_url` and `code_assist_url` are only used by Gemini: the first returns the
    account's email, the second is the Code Assist base URL that finds the account's project.
    """

    authorize_url: str
    token_url: str
    userinfo_url: str | None = None
    code_assist_url: str | None = None


@dataclass(frozen=True)
class ProviderOAuth:
    """The fixed OAuth description of one provider.

    `name` is also the `type` written into account files. `refresh_scope` is the `scope` sent
    with a refresh request, or None to send none. `refresh_lead` is how long before the access
    token's expiry the scheduler refreshes it.
    """

    name: str
    client_id: str
    client_secret: str | None
    scopes: tuple[str, ...]
    refresh_scope: str | None
    redirect_uri: str
    callback_port: int
    extra_authorize_params: Mapping[str, str]
    body_style: BodyStyle
    pkce: bool
    refresh_lead: timedelta
    default_endpoints: Endpoints
    endpoint_keys: frozenset[str] = field(
        default=frozenset({"authorize-url", "token-url"})
    )

    @property
    def scope(self) -> str:
        """The space-separated scope list sent in the authorization URL."""
        return " ".join(self.scopes)


CLAUDE_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
CODEX_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
GEMINI_CLI_CLIENT_ID = "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com"
# Google's "installed application" clients cannot keep a secret: this value ships inside the
# open-source Gemini CLI and is public. Google still requires it in token requests.
GEMINI_CLI_CLIENT_SECRET = "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"

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
GOOGLE_USERINFO_URL = "https://www.googleapis.com/oauth2/v1/userinfo?alt=json"
CODE_ASSIST_URL = "https://cloudcode-pa.googleapis.com"

_CLAUDE_SCOPES = (
    "user:profile",
    "user:inference",
    "user:sessions:claude_code",
    "user:mcp_servers",
    "user:file_upload",
)

CLAUDE = ProviderOAuth(
    name="claude",
    client_id=CLAUDE_CLIENT_ID,
    client_secret=None,
    scopes=_CLAUDE_SCOPES,
    refresh_scope=" ".join(_CLAUDE_SCOPES),
    redirect_uri="http://localhost:54545/callback",
    callback_port=54545,
    extra_authorize_params={"code": "true"},
    body_style=BodyStyle.JSON,
    pkce=True,
    refresh_lead=timedelta(hours=4),
    default_endpoints=Endpoints(
        authorize_url="https://claude.ai/oauth/authorize",
        token_url="https://platform.claude.com/v1/oauth/token",
    ),
)

CODEX = ProviderOAuth(
    name="codex",
    client_id=CODEX_CLIENT_ID,
    client_secret=None,
    scopes=("openid", "email", "profile", "offline_access"),
    refresh_scope="openid profile email",
    redirect_uri="http://localhost:1455/auth/callback",
    callback_port=1455,
    extra_authorize_params={
        "prompt": "login",
        "id_token_add_organizations": "true",
        "codex_cli_simplified_flow": "true",
    },
    body_style=BodyStyle.FORM,
    pkce=True,
    refresh_lead=timedelta(days=5),
    default_endpoints=Endpoints(
        authorize_url="https://auth.openai.com/oauth/authorize",
        token_url="https://auth.openai.com/oauth/token",
    ),
)

GEMINI = ProviderOAuth(
    name="gemini",
    client_id=GEMINI_CLI_CLIENT_ID,
    client_secret=GEMINI_CLI_CLIENT_SECRET,
    scopes=(
        "https://www.googleapis.com/auth/cloud-platform",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/userinfo.profile",
    ),
    refresh_scope=None,
    redirect_uri="http://localhost:8085/oauth2callback",
    callback_port=8085,
    extra_authorize_params={"access_type": "offline", "prompt": "consent"},
    body_style=BodyStyle.FORM,
    # The Gemini CLI client authenticates with its client secret and sends no PKCE challenge.
    pkce=False,
    # Google access tokens live one hour and the Gemini CLI refreshes them only when they are
    # used, so a short lead is enough.
    refresh_lead=timedelta(minutes=5),
    default_endpoints=Endpoints(
        authorize_url="https://accounts.google.com/o/oauth2/auth",
        token_url=GOOGLE_TOKEN_URL,
        userinfo_url=GOOGLE_USERINFO_URL,
        code_assist_url=CODE_ASSIST_URL,
    ),
    endpoint_keys=frozenset({"authorize-url", "token-url", "userinfo-url", "code-assist-url"}),
)

PROVIDERS: dict[str, ProviderOAuth] = {p.name: p for p in (CLAUDE, CODEX, GEMINI)}

# Names other tools and older management routes use for the same providers.
_ALIASES = {
    "anthropic": "claude",
    "openai": "codex",
    "google": "gemini",
    "gemini-cli": "gemini",
}


# Config keys of `oauth-endpoints.<provider>` and the Endpoints fields they set.
_ENDPOINT_FIELDS = {
    "authorize-url": "authorize_url",
    "token-url": "token_url",
    "userinfo-url": "userinfo_url",
    "code-assist-url": "code_assist_url",
}


def get_provider(name: str) -> ProviderOAuth:
    """Return the provider called `name` (or one of its aliases such as `gemini-cli`).

    Raises InvalidConfig for a provider without an OAuth login.
    """
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return PROVIDERS[key]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise InvalidConfig(f"unknown OAuth provider {name!r}: use one of {known}") from None


def resolve_endpoints(config: Mapping[str, Any] | None = None) -> dict[str, Endpoints]:
    """Return the endpoints of every provider, with `config` overriding the public defaults.

    `config` is the `oauth-endpoints` mapping, keyed by provider name and then by
    `authorize-url`, `token-url`, `userinfo-url` or `code-assist-url`. URLs must use https
    because codes and tokens travel over them; userinfo and Code Assist URLs may also use
    http on a loopback host. Raises InvalidConfig naming the offending key.
    """
    resolved = {name: provider.default_endpoints for name, provider in PROVIDERS.items()}
    for raw_name, overrides in (config or {}).items():
        provider = get_provider(str(raw_name))
        if not isinstance(overrides, Mapping):
            raise InvalidConfig(
                f"oauth-endpoints.{raw_name} must be a mapping of endpoint names to URLs"
            )
        changes: dict[str, str] = {}
        for key, url in overrides.items():
            config_key = f"oauth-endpoints.{raw_name}.{key}"
            if key not in provider.endpoint_keys:
                allowed = ", ".join(sorted(provider.endpoint_keys))
                raise InvalidConfig(f"{config_key} is not a known endpoint: use {allowed}")
            # oauthlib raises InsecureTransportError for plain-http authorize and token URLs.
            loopback_http_allowed = key in ("userinfo-url", "code-assist-url")
            url = _checked_url(config_key, url, loopback_http_allowed)
            if key == "code-assist-url":
                url = url.rstrip("/")
            changes[_ENDPOINT_FIELDS[key]] = url
        resolved[provider.name] = dataclasses.replace(resolved[provider.name], **changes)
    return resolved


def _checked_url(config_key: str, url: Any, loopback_http_allowed: bool) -> str:
    if not isinstance(url, str) or not url:
        raise InvalidConfig(f"{config_key} must be a URL string, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if loopback_http_allowed and parts.scheme == "http" and _is_loopback(parts.hostname):
        return url
    if loopback_http_allowed:
        raise InvalidConfig(
            f"{config_key} must be an https:// URL (http:// only on a loopback host), got {url!r}"
        )
    raise InvalidConfig(f"{config_key} must be an https:// URL, got {url!r}")


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
