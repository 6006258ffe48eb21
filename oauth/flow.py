"""Interactive logins: authorization URLs, callbacks and the registry behind the management API.

A login has three steps:

1. `start()` creates a `LoginSession` with a random state (and a PKCE verifier where the
   provider uses PKCE) and the authorization URL the user opens in a browser.
2. The provider redirects the browser to the provider's registered localhost callback with
   `code` and `state`. Nothing may listen there (remote or headless use), so the user can also
   paste the URL the browser landed on, or just the code; Claude's manual flow shows the code
   as `code#state`. `parse_callback_input()` reads all of these forms.
3. `complete()` checks the state and exchanges the code for tokens.

`LoginRegistry` keeps pending logins by state for the management routes (`*-auth-url`,
`get-auth-status`, `oauth-callback`). Its callback returns at once: the code exchange, the
identity lookup and the account file write run in a worker thread, so an event loop that
calls it never blocks on HTTP.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from oauthlib.oauth2 import WebApplicationClient
from requests_oauthlib import OAuth2Session

from oauth.authfiles import write_account_file
from oauth.clock import Clock, utc_now
from oauth.errors import (
    AuthorizationDenied,
    InvalidCallback,
    InvalidState,
    LoginNotPending,
    OAuthError,
    StateExpired,
    StateMismatch,
    StateNotFound,
)
from oauth.http import HttpSettings
from oauth.identity import identity_for
from oauth.providers import Endpoints, ProviderOAuth, get_provider
from oauth.tokens import TokenSet, exchange_code

logger = logging.getLogger(__name__)

STATE_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
# RFC 7636 allows 43 to 128 characters; 43 carries 256 bits of entropy.
CODE_VERIFIER_LENGTH = 43
LOGIN_TTL = timedelta(minutes=10)
# How long a finished login's result stays readable through `status()`.
FINISHED_TTL = timedelta(minutes=5)


@dataclass(frozen=True)
class LoginSession:
    """One started login: what the user opens and what the callback must match."""

    provider: ProviderOAuth
    endpoints: Endpoints
    state: str
    url: str
    code_verifier: str | None = field(repr=False)
    created_at: datetime


@dataclass(frozen=True)
class CallbackParams:
    """The code, state and error read from a callback or from text the user pasted."""

    code: str | None = field(default=None, repr=False)
    state: str | None = None
    error: str | None = None
    error_description: str | None = None


def validate_state(state: str) -> str:
    """Return `state` if it is a well-formed login state, else raise InvalidState."""
    if not isinstance(state, str) or not STATE_PATTERN.fullmatch(state) or ".." in state:
        raise InvalidState("invalid state: use 1 to 128 characters from A-Z a-z 0-9 . _ -")
    return state


def start(
    provider: str | ProviderOAuth,
    endpoints: Endpoints | Mapping[str, Endpoints],
    *,
    clock: Clock = utc_now,
) -> LoginSession:
    """Start a login: pick a state and PKCE verifier and build the authorization URL.

    `endpoints` is the provider's `Endpoints` or the mapping `resolve_endpoints()` returns.
    """
    if isinstance(provider, str):
        provider = get_provider(provider)
    if not isinstance(endpoints, Endpoints):
        endpoints = endpoints[provider.name]

    state = secrets.token_hex(16)
    params: dict[str, str] = dict(provider.extra_authorize_params)
    code_verifier = None
    if provider.pkce:
        client = WebApplicationClient(provider.client_id)
        code_verifier = client.create_code_verifier(CODE_VERIFIER_LENGTH)
        params["code_challenge"] = client.create_code_challenge(code_verifier, "S256")
        params["code_challenge_method"] = "S256"

    session = OAuth2Session(
        provider.client_id, redirect_uri=provider.redirect_uri, scope=list(provider.scopes)
    )
    url, _ = session.authorization_url(endpoints.authorize_url, state=state, **params)
    session.close()
    return LoginSession(
        provider=provider,
        endpoints=endpoints,
        state=state,
        url=url,
        code_verifier=code_verifier,
        created_at=clock(),
    )


def parse_callback_input(text: str) -> CallbackParams:
    """Read code, state and error from a redirected URL, a query string or a bare code.

    Accepted forms: the full URL the browser landed on (`http://localhost:1455/auth/callback?
    code=...&state=...`), its query string alone, a bare code, and Claude's `code#state`.
    Raises InvalidCallback for empty input.
    """
    text = (text or "").strip()
    if not text:
        raise InvalidCallback("code or error is required")

    query = None
    if "://" in text:
        parts = urlsplit(text)
        # Some providers return the parameters in the fragment instead of the query.
        query = parts.query or parts.fragment
    elif text.startswith("?") or "code=" in text or "error=" in text:
        query = text.lstrip("?")

    if query is not None:
        values = parse_qs(query, keep_blank_values=False)
        code = _first(values, "code")
        state = _first(values, "state")
        if code and "#" in code:
            code, _, hashed_state = code.partition("#")
            state = state or hashed_state
        return CallbackParams(
            code=code,
            state=state,
            error=_first(values, "error"),
            error_description=_first(values, "error_description"),
        )

    code, _, state = text.partition("#")
    return CallbackParams(code=code.strip() or None, state=state.strip() or None)


def complete(
    session: LoginSession,
    redirected_url_or_code: str | CallbackParams,
    *,
    http: HttpSettings | None = None,
    clock: Clock = utc_now,
) -> TokenSet:
    """Check the callback against the session and exchange its code for tokens (blocking).

    A state in the input must equal the session's state. A bare code without a state is
    accepted, because the user copied it from the browser tab of this session's login.
    Raises AuthorizationDenied when the provider sent an error, StateMismatch, InvalidCallback,
    and the token errors of `exchange_code`.
    """
    params = (
        redirected_url_or_code
        if isinstance(redirected_url_or_code, CallbackParams)
        else parse_callback_input(redirected_url_or_code)
    )
    if params.error:
        raise AuthorizationDenied(params.error, params.error_description)
    if not params.code:
        raise InvalidCallback("code or error is required")
    if params.state is not None and not secrets.compare_digest(
        params.state.encode(), session.state.encode()
    ):
        raise StateMismatch("the callback's state does not match the login's state")
    return exchange_code(
        session.provider,
        session.endpoints,
        params.code,
        code_verifier=session.code_verifier,
        state=session.state,
        now=clock(),
        http=http or HttpSettings(),
    )


@dataclass
class _Login:
    session: LoginSession
    project_id: str | None
    status: str = "wait"  # "wait", "exchanging", "ok" or "error"
    error: str | None = None
    finished_at: datetime | None = None
    saved_path: Path | None = None
    future: Future[Path] | None = field(default=None, repr=False)


class LoginRegistry:
    """Pending and recently finished logins, keyed by state, for the management API.

    `on_saved(path, provider_name)` is called from the worker thread after an account file was
    written, so the pool can load it. `clock` is injectable for tests. Call `close()` on
    shutdown to stop the worker threads.
    """

    def __init__(
        self,
        auth_dir: Path,
        endpoints: Mapping[str, Endpoints],
        *,
        http: HttpSettings | None = None,
        clock: Clock = utc_now,
        login_ttl: timedelta = LOGIN_TTL,
        finished_ttl: timedelta = FINISHED_TTL,
        on_saved: Callable[[Path, str], None] | None = None,
        max_workers: int = 4,
    ) -> None:
        self._auth_dir = Path(auth_dir)
        self._endpoints = dict(endpoints)
        self._http = http or HttpSettings()
        self._clock = clock
        self._login_ttl = login_ttl
        self._finished_ttl = finished_ttl
        self._on_saved = on_saved
        self._logins: dict[str, _Login] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="oauth-login"
        )

    def begin(self, provider: str, *, project_id: str | None = None) -> dict[str, str]:
        """Start a login and return `{"status": "ok", "url": ..., "state": ...}`.

        `project_id` is the Gemini Code Assist project; empty means discover it.
        Raises InvalidConfig for an unknown provider.
        """
        provider_oauth = get_provider(provider)
        session = start(provider_oauth, self._endpoints[provider_oauth.name], clock=self._clock)
        with self._lock:
            self._purge_locked()
            self._logins[session.state] = _Login(session=session, project_id=project_id or None)
        logger.info("started %s login", provider_oauth.name)
        return {"status": "ok", "url": session.url, "state": session.state}

    def status(self, state: str) -> dict[str, str]:
        """Return `{"status": "wait"}`, `{"status": "ok"}` or `{"status": "error", "error": msg}`.

        Unknown states, and logins that finished or timed out more than `finished_ttl` ago,
        return the error "unknown or expired state". A login still waiting after `login_ttl`
        returns an error whose message reports the timeout.
        Raises InvalidState for a malformed state (the route returns HTTP 400).
        """
        validate_state(state)
        with self._lock:
            login = self._logins.get(state)
            if login is None or self._is_stale_locked(login):
                return {"status": "error", "error": "unknown or expired state"}
            if self._is_timed_out_locked(login):
                return {"status": "error", "error": _timed_out_message(self._login_ttl)}
            if login.status == "ok":
                return {"status": "ok"}
            if login.status == "error":
                return {"status": "error", "error": login.error or "login failed"}
            return {"status": "wait"}

    def callback(
        self,
        state: str | None,
        code: str | None = None,
        error: str | None = None,
        redirect_url: str | None = None,
        *,
        provider: str | None = None,
    ) -> dict[str, str]:
        """Accept a login's callback and start the code exchange in a worker thread.

        Parameters may come separately or inside `redirect_url` (the URL the browser landed
        on, or any text `parse_callback_input` reads). Returns `{"status": "ok"}` once the
        exchange has been queued, or once a provider error has been recorded.

        Raises, with the HTTP status a route should return:
        InvalidState (400) for a missing or malformed state, InvalidCallback (400) without
        code or error, StateMismatch (400) when `redirect_url` or `provider` belong to another
        login, StateNotFound (404), StateExpired (404), LoginNotPending (409).
        """
        pasted = parse_callback_input(redirect_url) if redirect_url else CallbackParams()
        if state and pasted.state and pasted.state != state:
            raise StateMismatch("the state in redirect_url differs from the state parameter")
        state = state or pasted.state
        if not state:
            raise InvalidState("state is required")
        validate_state(state)
        code = code or pasted.code
        error = error or pasted.error
        if code and "#" in code:
            code, _, hashed_state = code.partition("#")
            if hashed_state and hashed_state != state:
                raise StateMismatch("the state after '#' in the code differs from the state")

        with self._lock:
            login = self._logins.get(state)
            if login is None:
                raise StateNotFound("unknown or expired state")
            if self._is_stale_locked(login):
                raise StateExpired("unknown or expired state")
            if self._is_timed_out_locked(login):
                raise StateExpired(_timed_out_message(self._login_ttl))
            if provider is not None and get_provider(provider).name != login.session.provider.name:
                raise StateMismatch("provider does not match state")
            if login.status != "wait":
                raise LoginNotPending(f"oauth flow is not pending (status {login.status})")
            if error:
                description = pasted.error_description
                login.status = "error"
                login.error = str(AuthorizationDenied(error, description))
                login.finished_at = self._clock()
                logger.warning(
                    "%s login failed at the provider: %s", login.session.provider.name, error
                )
                return {"status": "ok"}
            if not code:
                raise InvalidCallback("code or error is required")
            login.status = "exchanging"
            login.future = self._executor.submit(self._finish_login, login, code)
        return {"status": "ok"}

    def cancel(self, state: str) -> bool:
        """Forget a pending login; returns whether one was pending.

        A login whose code exchange already started still writes its account file.
        """
        validate_state(state)
        with self._lock:
            login = self._logins.get(state)
            if login is None or login.status != "wait":
                return False
            del self._logins[state]
            return True

    def wait(self, state: str, timeout: float | None = None) -> dict[str, str]:
        """Block until the login's code exchange finishes, then return `status(state)`.

        For CLI logins and tests; never call it on an event loop thread.
        """
        with self._lock:
            login = self._logins.get(state)
            future = login.future if login else None
        if future is not None:
            future.exception(timeout=timeout)
        return self.status(state)

    def saved_path(self, state: str) -> Path | None:
        """Return the account file a finished login wrote, or None."""
        with self._lock:
            login = self._logins.get(state)
            return login.saved_path if login else None

    def close(self, *, wait: bool = True) -> None:
        """Stop accepting callbacks; queued and running code exchanges still finish.

        With `wait=False` it returns at once, which an event loop thread must use because an
        exchange can take up to the HTTP timeout.
        """
        self._executor.shutdown(wait=wait)

    def _finish_login(self, login: _Login, code: str) -> Path:
        session = login.session
        provider = session.provider
        try:
            tokens = complete(
                session,
                CallbackParams(code=code, state=session.state),
                http=self._http,
                clock=self._clock,
            )
            identity = identity_for(
                provider, tokens, session.endpoints, self._http, project_id=login.project_id
            )
            path = write_account_file(
                self._auth_dir,
                provider,
                tokens,
                identity,
                endpoints=session.endpoints,
                now=self._clock(),
            )
        except OAuthError as exc:
            self._finish(login, error=f"login failed: {exc}")
            logger.warning("%s login failed: %s", provider.name, exc)
            raise
        except OSError as exc:
            self._finish(login, error=f"failed to save authentication tokens: {exc}")
            logger.error("%s login could not save its account file: %s", provider.name, exc)
            raise
        except Exception:
            # Without this, a bug would leave the login in "wait" until it is forgotten.
            self._finish(login, error="login failed: internal error, see the proxy log")
            logger.exception("%s login failed unexpectedly", provider.name)
            raise

        self._finish(login, path=path)
        if self._on_saved is not None:
            try:
                self._on_saved(path, provider.name)
            except Exception:  # noqa: BLE001 - a consumer bug must not fail the saved login
                logger.exception("on_saved hook failed for %s", path.name)
        return path

    def _finish(self, login: _Login, *, path: Path | None = None, error: str | None = None) -> None:
        with self._lock:
            login.finished_at = self._clock()
            login.saved_path = path
            login.error = error
            login.status = "error" if error else "ok"

    def _is_timed_out_locked(self, login: _Login) -> bool:
        """Return whether a login still waiting for its callback was started too long ago."""
        return login.status == "wait" and self._clock() - login.session.created_at > self._login_ttl

    def _is_stale_locked(self, login: _Login) -> bool:
        """Return whether a login can be forgotten: finished or timed out over `finished_ttl` ago."""
        now = self._clock()
        if login.status == "exchanging":
            # A running exchange is never cut off; it records its result when it finishes.
            return False
        if login.status == "wait":
            deadline = login.session.created_at + self._login_ttl
        else:
            deadline = login.finished_at or login.session.created_at
        return now - deadline > self._finished_ttl

    def _purge_locked(self) -> None:
        stale = [state for state, login in self._logins.items() if self._is_stale_locked(login)]
        for state in stale:
            del self._logins[state]


def _timed_out_message(ttl: timedelta) -> str:
    minutes = int(ttl.total_seconds() // 60)
    return f"login expired: no callback arrived within {minutes} minutes; start a new login"


def _first(values: Mapping[str, list[str]], key: str) -> str | None:
    items = values.get(key)
    if not items:
        return None
    value = items[0].strip()
    return value or None

