"""The exceptions of the OAuth layer.

Every error raised by `oauth` derives from `OAuthError`, so a caller can catch the whole layer
with one clause and still tell the cases apart. Messages never contain a token; they name the
provider, the account file or the state instead.
"""

from __future__ import annotations

from datetime import datetime


class OAuthError(Exception):
    """Base class of every error raised by the OAuth layer."""


class InvalidConfig(OAuthError, ValueError):
    """An OAuth endpoint setting that cannot be used (unknown provider or key, bad URL)."""


class InvalidState(OAuthError):
    """A login state that does not match `[A-Za-z0-9._-]{1,128}` or contains `..`."""


class StateNotFound(OAuthError):
    """A login state that no pending login has."""


class StateExpired(OAuthError):
    """A login state whose login was started too long ago to be completed."""


class StateMismatch(OAuthError):
    """A callback or pasted URL whose state differs from the login's state."""


class LoginNotPending(OAuthError):
    """A callback for a login that has already completed, failed or is exchanging its code."""


class InvalidCallback(OAuthError):
    """A callback or pasted text that carries neither an authorization code nor an error."""


class AuthorizationDenied(OAuthError):
    """The provider redirected back with an `error` instead of a code (for example the user declined)."""

    def __init__(self, error: str, description: str | None = None) -> None:
        message = f"authorization failed: {error}"
        if description:
            message += f" ({description})"
        super().__init__(message)
        self.error = error
        self.description = description


class TokenEndpointError(OAuthError):
    """The token endpoint failed: network error, timeout, 5xx or an unreadable response.

    `status` is the HTTP status, or None when no response arrived. These failures are
    transient: the refresher retries them after a backoff.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(TokenEndpointError):
    """The token endpoint returned HTTP 429; `retry_after` is its Retry-After in seconds, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


class TokenRequestRejected(OAuthError):
    """The token endpoint rejected the request with an OAuth error other than `invalid_grant`.

    Examples are `invalid_client` and `invalid_request`. Retrying the same request does not help.
    """

    def __init__(self, message: str, *, error: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.status = status


class InvalidGrant(TokenRequestRejected):
    """The authorization code or refresh token is invalid, expired or revoked.

    For a refresh token this means the account needs a new login: the caller should set the
    account's status to `error` with this message.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, error="invalid_grant", status=status)


class NoRefreshToken(OAuthError):
    """The account file has no refresh token, so its access token cannot be renewed."""


class ReloginRequired(OAuthError):
    """A refresh was skipped because this refresh token was already rejected with invalid_grant.

    The mark clears by itself when the account file gets a different refresh token (a new login
    or another program's refresh).
    """


class RefreshBackoff(OAuthError):
    """A refresh was skipped because an earlier attempt failed and the backoff has not elapsed."""

    def __init__(self, message: str, *, retry_at: datetime) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class AccountFileMissing(OAuthError):
    """The account file was deleted; its account must not be refreshed or recreated."""


class AccountFileWriteError(OAuthError):
    """Refreshed tokens could not be written to the account file.

    The refresher keeps them in memory and writes them on the next refresh attempt, because
    the provider may already have invalidated the old refresh token.
    """


class AccountFileInvalid(OAuthError):
    """The account file cannot be read as a JSON object of a known provider type."""


class IdentityError(OAuthError):
    """The account's identity (email, account id, project) could not be determined."""
