"""OAuth logins and token refresh for Claude Code, Codex (ChatGPT) and Gemini CLI accounts.

The modules, in the order a login uses them:

- `providers`: the fixed public OAuth clients and the configurable endpoints;
- `flow`: authorization URLs, callbacks and `LoginRegistry` for the management routes;
- `tokens`: the token endpoint calls (code exchange, refresh);
- `identity`: email, account id, plan and Gemini project of a login;
- `authfiles`: CLIProxyAPI-compatible account files, written atomically;
- `refresh`: `TokenRefresher` (single-flight refresh with backoff) and `RefreshScheduler`.

Every error is an `oauth.errors.OAuthError`. Nothing here logs a token.
"""

from oauth.errors import OAuthError
from oauth.flow import LoginRegistry, LoginSession, complete, start
from oauth.http import HttpSettings
from oauth.providers import Endpoints, ProviderOAuth, get_provider, resolve_endpoints
from oauth.refresh import AccountRef, RefreshResult, RefreshScheduler, TokenRefresher
from oauth.tokens import TokenSet

__all__ = [
    "AccountRef",
    "Endpoints",
    "HttpSettings",
    "LoginRegistry",
    "LoginSession",
    "OAuthError",
    "ProviderOAuth",
    "RefreshResult",
    "RefreshScheduler",
    "TokenRefresher",
    "TokenSet",
    "complete",
    "get_provider",
    "resolve_endpoints",
    "start",
]
