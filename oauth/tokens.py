"""Token endpoint calls: authorization-code exchange and refresh, per provider body style.

Codex and Gemini use standard form-encoded token requests, made with requests-oauthlib's
`OAuth2Session`. Claude's token endpoint takes a JSON body, which `OAuth2Session` cannot send,
so Claude requests are made with `requests` directly. Both paths map HTTP and OAuth failures
onto the `oauth.errors` classes the same way (`_raise_for_token_error`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from oauthlib.oauth2 import OAuth2Error
from requests_oauthlib import OAuth2Session

from oauth.errors import (
    InvalidGrant,
    OAuthError,
    RateLimited,
    TokenEndpointError,
    TokenRequestRejected,
)
from oauth.http import HttpSettings
from oauth.providers import BodyStyle, Endpoints, ProviderOAuth

logger = logging.getLogger(__name__)

# Maximum length of an error description copied from a token endpoint response into a message.
_MAX_DESCRIPTION_CHARS = 200


class _DropDebugRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


# requests-oauthlib logs whole token responses and request bodies at DEBUG level. The filter
# keeps access and refresh tokens out of the log even when the root logger is at DEBUG.
logging.getLogger("requests_oauthlib.oauth2_session").addFilter(_DropDebugRecords())


@dataclass(frozen=True)
class TokenSet:
    """The tokens of one token endpoint response.

    `expiry` is when the access token expires (now + `expires_in`), or None when the response
    gave no lifetime. `response` is the whole decoded response, which also carries identity
    data such as Claude's `account` and `organization` objects. Token fields are left out
    of `repr` so that logging a TokenSet cannot leak them.
    """

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expiry: datetime | None
    token_type: str = "Bearer"
    id_token: str | None = field(default=None, repr=False)
    scope: str | None = None
    response: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def with_refresh_token(self, refresh_token: str | None) -> TokenSet:
        """Return a copy whose refresh token is `refresh_token` when this one has none."""
        if self.refresh_token or not refresh_token:
            return self
        return TokenSet(
            access_token=self.access_token,
            refresh_token=refresh_token,
            expiry=self.expiry,
            token_type=self.token_type,
            id_token=self.id_token,
            scope=self.scope,
            response=self.response,
        )


def exchange_code(
    provider: ProviderOAuth,
    endpoints: Endpoints,
    code: str,
    *,
    code_verifier: str | None,
    state: str,
    now: datetime,
    http: HttpSettings,
) -> TokenSet:
    """Exchange an authorization code for tokens (blocking HTTP).

    Raises InvalidGrant for a used or expired code, TokenRequestRejected for other OAuth
    errors and TokenEndpointError for network failures, 5xx and unreadable responses.
    """
    if provider.body_style is BodyStyle.JSON:
        # Anthropic's token endpoint reads a JSON body and wants the state echoed back.
        body: dict[str, Any] = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": provider.redirect_uri,
            "client_id": provider.client_id,
            "state": state,
        }
        if code_verifier:
            body["code_verifier"] = code_verifier
        data = _post_json(provider, endpoints.token_url, body, http)
        return token_set_from_response(data, now)

    extra: dict[str, Any] = {}
    if code_verifier:
        extra["code_verifier"] = code_verifier
    with OAuth2Session(provider.client_id, redirect_uri=provider.redirect_uri) as session:
        http.configure(session)
        session.register_compliance_hook("access_token_response", _check_hook(provider))
        try:
            token = session.fetch_token(
                endpoints.token_url,
                code=code,
                include_client_id=True,
                client_secret=provider.client_secret,
                timeout=http.timeout,
                **extra,
            )
        except requests.RequestException as exc:
            raise _network_error(provider, endpoints.token_url, exc) from exc
        except OAuth2Error as exc:
            raise _oauthlib_error(provider, exc) from exc
    return token_set_from_response(token, now)


def refresh_access_token(
    provider: ProviderOAuth,
    endpoints: Endpoints,
    refresh_token: str,
    *,
    now: datetime,
    http: HttpSettings,
) -> TokenSet:
    """Send a refresh_token grant and return the new tokens (blocking HTTP).

    When the response has no refresh token, the returned TokenSet carries `refresh_token`
    (the old one), because providers that do not rotate expect it to be reused.
    Raises like `exchange_code`; InvalidGrant means the account needs a new login.
    """
    if provider.body_style is BodyStyle.JSON:
        # Anthropic's token endpoint reads a JSON body.
        body: dict[str, Any] = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": provider.client_id,
        }
        if provider.refresh_scope:
            body["scope"] = provider.refresh_scope
        data = _post_json(provider, endpoints.token_url, body, http)
        return token_set_from_response(data, now).with_refresh_token(refresh_token)

    credentials = {"client_id": provider.client_id}
    if provider.client_secret:
        credentials["client_secret"] = provider.client_secret
    # The refresh scope goes into the pre-encoded body: OAuth2Session compares a scope set on
    # the session with the granted scope and raises when the provider widens or narrows it.
    scope_body = urlencode({"scope": provider.refresh_scope}) if provider.refresh_scope else ""
    with OAuth2Session(provider.client_id) as session:
        http.configure(session)
        session.register_compliance_hook("refresh_token_response", _check_hook(provider))
        try:
            token = session.refresh_token(
                endpoints.token_url,
                refresh_token=refresh_token,
                body=scope_body,
                timeout=http.timeout,
                **credentials,
            )
        except requests.RequestException as exc:
            raise _network_error(provider, endpoints.token_url, exc) from exc
        except OAuth2Error as exc:
            raise _oauthlib_error(provider, exc) from exc
    return token_set_from_response(token, now).with_refresh_token(refresh_token)


def token_set_from_response(data: Mapping[str, Any], now: datetime) -> TokenSet:
    """Build a TokenSet from a decoded token response; `now` anchors `expires_in`.

    Raises TokenEndpointError when the response has no access token.
    """
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenEndpointError("token endpoint response has no access_token")

    expiry = None
    expires_in = data.get("expires_in")
    if isinstance(expires_in, str) and expires_in.strip().isdigit():
        expires_in = int(expires_in)
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool):
        expiry = now + timedelta(seconds=float(expires_in))

    scope = data.get("scope")
    if isinstance(scope, (list, tuple)):
        scope = " ".join(str(item) for item in scope)

    refresh_token = data.get("refresh_token")
    id_token = data.get("id_token")
    return TokenSet(
        access_token=access_token,
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        expiry=expiry,
        token_type=str(data.get("token_type") or "Bearer"),
        id_token=id_token if isinstance(id_token, str) and id_token else None,
        scope=scope if isinstance(scope, str) else None,
        response=dict(data),
    )


def _post_json(
    provider: ProviderOAuth, url: str, body: Mapping[str, Any], http: HttpSettings
) -> Mapping[str, Any]:
    with http.new_session() as session:
        try:
            response = session.post(
                url,
                json=body,
                headers={"Accept": "application/json"},
                timeout=http.timeout,
            )
        except requests.RequestException as exc:
            raise _network_error(provider, url, exc) from exc
    _raise_for_token_error(provider, response)
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise TokenEndpointError(
            f"{provider.name} token endpoint returned a body that is not a JSON object",
            status=response.status_code,
        )
    return data


def _check_hook(provider: ProviderOAuth) -> Callable[[requests.Response], requests.Response]:
    def check(response: requests.Response) -> requests.Response:
        _raise_for_token_error(provider, response)
        return response

    return check


def _raise_for_token_error(provider: ProviderOAuth, response: requests.Response) -> None:
    """Raise the matching OAuthError for a failed token response; return for a 2xx JSON response."""
    status = response.status_code
    if status == 429:
        raise RateLimited(
            f"{provider.name} token endpoint rate-limited the request (HTTP 429)",
            retry_after=_retry_after_seconds(response.headers.get("Retry-After")),
        )
    if status >= 500 or status == 408:
        raise TokenEndpointError(
            f"{provider.name} token endpoint failed with HTTP {status}", status=status
        )
    if status >= 400:
        error, description = _oauth_error_fields(response)
        detail = f": {error}" if error else ""
        if description:
            detail += f" ({description})"
        message = f"{provider.name} token endpoint rejected the request with HTTP {status}{detail}"
        if error == "invalid_grant":
            raise InvalidGrant(message, status=status)
        raise TokenRequestRejected(message, error=error, status=status)
    if status < 200 or status >= 300:
        raise TokenEndpointError(
            f"{provider.name} token endpoint returned unexpected HTTP {status}", status=status
        )
    content_type = response.headers.get("Content-Type", "")
    if "json" not in content_type.lower():
        try:
            response.json()
        except ValueError:
            raise TokenEndpointError(
                f"{provider.name} token endpoint returned HTTP {status} without a JSON body",
                status=status,
            ) from None


def _oauth_error_fields(response: requests.Response) -> tuple[str | None, str | None]:
    try:
        data = response.json()
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    error = data.get("error")
    description = data.get("error_description")
    if isinstance(error, dict):
        # Anthropic-style error object: {"error": {"type": ..., "message": ...}}.
        description = error.get("message")
        error = error.get("type") or error.get("code")
    if not isinstance(error, str):
        error = None
    if isinstance(description, str):
        description = description[:_MAX_DESCRIPTION_CHARS]
    else:
        description = None
    return error, description


def _retry_after_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        # NOTE: the HTTP-date form of Retry-After is not parsed; the refresher's backoff applies.
        return None
    return max(seconds, 0.0)


def _network_error(
    provider: ProviderOAuth, url: str, exc: requests.RequestException
) -> TokenEndpointError:
    host = urlsplit(url).netloc
    kind = "timed out" if isinstance(exc, requests.Timeout) else "failed"
    return TokenEndpointError(
        f"{provider.name} token request to {host} {kind}: {type(exc).__name__}: {exc}"
    )


def _oauthlib_error(provider: ProviderOAuth, exc: OAuth2Error) -> OAuthError:
    # oauthlib parses 2xx responses only (the hook handles 4xx and 5xx), so an OAuth2Error here
    # means a 2xx response that was malformed or carried an `error` field.
    message = f"{provider.name} token endpoint response is invalid: {exc.error}"
    if exc.error == "invalid_grant":
        return InvalidGrant(message)
    if exc.error in ("missing_token", "missing_token_type"):
        return TokenEndpointError(message, status=exc.status_code)
    return TokenRequestRejected(message, error=exc.error)
