"""OAuth tokens on the request path: refresh before expiry, on demand, and after a 401.

`TokenKeeper` owns the `oauth.TokenRefresher` (one token request per account at a time;
concurrent callers wait for the same refresh) and the background `RefreshScheduler` that
renews each token before it expires (Claude 4 h, Codex 5 days, Gemini 5 min ahead). The router
calls `ensure_fresh()` before an OAuth account is used, so an expired access token with a
valid refresh token is refreshed instead of skipped; the failover addon calls
`refresh_after_401()` once per account and request. A rejected refresh token (`invalid_grant`)
puts the account in the `error` state until its file changes.
"""

import logging

from config import Config
from oauth.errors import (
    AccountFileMissing,
    InvalidConfig,
    InvalidGrant,
    NoRefreshToken,
    OAuthError,
    ReloginRequired,
)
from oauth.http import HttpSettings
from oauth.providers import resolve_endpoints
from oauth.refresh import RefreshResult, RefreshScheduler, TokenRefresher
from pool import Account, AccountPool

logger = logging.getLogger(__name__)

RELOGIN_ERRORS = (InvalidGrant, ReloginRequired, NoRefreshToken, AccountFileMissing)


class TokenKeeper:
    """Keeps the OAuth accounts of a pool supplied with valid access tokens."""

    def __init__(self, pool: AccountPool) -> None:
        self.pool = pool
        self.refresher: TokenRefresher | None = None
        self.scheduler: RefreshScheduler | None = None
        self._settings: tuple[str, str] | None = None

    def configure(self, config: Config) -> None:
        """Create the refresher for the config's OAuth endpoints and outbound proxy."""
        settings = (repr(config.oauth_endpoints), config.proxy_url)
        if settings == self._settings:
            return
        try:
            endpoints = resolve_endpoints(config.oauth_endpoints)
        except InvalidConfig as error:
            logger.error("OAuth token refresh unavailable: %s", error)
            return
        old = self.refresher
        self.refresher = TokenRefresher(endpoints, http=HttpSettings(proxy_url=config.proxy_url))
        self._settings = settings
        if self.scheduler is not None:
            self.scheduler = self._new_scheduler()
        if old is not None:
            old.close(wait=False)

    def start(self) -> None:
        """Start the background refresh on the running event loop."""
        if self.refresher is None:
            return
        self.scheduler = self._new_scheduler()
        self.scheduler.start()

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
            self.scheduler = None
        if self.refresher is not None:
            self.refresher.close(wait=False)

    def wake(self) -> None:
        """Re-check expiries now, e.g. after the account files were reloaded."""
        if self.scheduler is not None:
            self.scheduler.wake()

    async def ensure_fresh(self, account: Account) -> bool:
        """Refresh `account`'s token if it has expired; False when the account is unusable now."""
        if not account.is_oauth or account.path is None or self.refresher is None:
            return True
        try:
            result = await self.refresher.ensure_fresh(account)
        except OAuthError as error:
            self._failed(account, error)
            return False
        if result is not None:
            self._apply(account, result)
        return True

    async def refresh_after_401(self, account: Account) -> bool:
        """Refresh after the upstream rejected the token; True when there is a new token."""
        if not account.is_oauth or account.path is None or self.refresher is None:
            return False
        failed_token = account.secret
        try:
            result = await self.refresher.force_refresh(account, failed_access_token=failed_token)
        except OAuthError as error:
            self._failed(account, error)
            return False
        self._apply(account, result)
        return result.access_token != failed_token

    def _new_scheduler(self) -> RefreshScheduler:
        assert self.refresher is not None
        return RefreshScheduler(
            self.refresher,
            self._refreshable_accounts,
            on_refreshed=self._on_refreshed,
            on_error=self._failed,
        )

    def _refreshable_accounts(self) -> list[Account]:
        return [
            account
            for account in self.pool.accounts()
            if account.is_oauth and account.path is not None and not account.disabled
        ]

    def _on_refreshed(self, account: Account, result: RefreshResult) -> None:
        self._apply(account, result)
        logger.info("refreshed the access token of account %s", account.label)

    def _apply(self, account: Account, result: RefreshResult) -> None:
        account.secret = result.access_token
        account.expires_at = result.expires_at
        account_id = result.data.get("account_id")
        if isinstance(account_id, str) and account_id:
            account.account_id = account_id
        self.pool.clear_error(account.id)

    def _failed(self, account: Account, error: OAuthError) -> None:
        if isinstance(error, RELOGIN_ERRORS):
            message = (
                f"token refresh rejected: {error}; log in again with "
                f"`cliproxy login {account.family.value}` or replace the file"
            )
            self.pool.set_error(account.id, message)
            logger.warning("account %s: %s", account.label, message)
        else:
            logger.warning("account %s: token refresh failed, will retry: %s", account.label, error)
