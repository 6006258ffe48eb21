"""Temporary loopback listeners for OAuth redirects of logins started from a desktop app.

Each provider's public OAuth client redirects the browser to a fixed localhost URL (Claude
`http://localhost:54545/callback`, Codex `http://localhost:1455/auth/callback`, Gemini
`http://localhost:8085/oauth2callback`). When a login starts with `is_webui=true`, as Quotio
does, a listener opens on that port and hands the redirect's `code`, `state` or `error` to
the login registry, so the login completes without the user pasting anything. The listener
closes when no login it serves is pending, and at the latest after `ttl` seconds.
"""

from __future__ import annotations

import html
import http.server
import logging
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs, urlsplit

from oauth.errors import OAuthError
from oauth.flow import LoginRegistry
from oauth.providers import get_provider

logger = logging.getLogger(__name__)

# How long a listener waits for its redirect: the login registry's own lifetime (10 minutes).
DEFAULT_TTL_SECONDS = 600.0

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>cliproxy login</title></head>
<body style="font-family: sans-serif; margin: 3em">
<h1>{title}</h1><p>{detail}</p></body></html>
"""


class _Listener:
    """One HTTP server on a provider's callback port, served by a daemon thread.

    The thread stops once none of its logins is pending or its deadline passed.
    """

    def __init__(
        self,
        port: int,
        path: str,
        provider: str,
        owner: CallbackListeners,
    ) -> None:
        self.provider = provider
        self.path = path
        self.owner = owner
        self.states: set[str] = set()
        self.deadline = 0.0
        self.closed = False
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, title, detail = listener.handle(self.path)
                page = _PAGE.format(title=html.escape(title), detail=html.escape(detail))
                body = page.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.server.timeout = 0.2
        self.thread = threading.Thread(
            target=self._serve, name=f"oauth-callback-{port}", daemon=True
        )

    def handle(self, raw_path: str) -> tuple[int, str, str]:
        """Pass one redirect to the registry; return the HTTP status and page text."""
        parts = urlsplit(raw_path)
        if parts.path != self.path:
            return 404, "Not found", "This address only receives OAuth redirects."
        params = {key: values[0] for key, values in parse_qs(parts.query).items()}
        state = params.get("state")
        registry = self.owner.registry()
        if registry is None or not state:
            return 400, "Login failed", "The redirect carries no login state."
        try:
            registry.callback(
                state, params.get("code"), params.get("error"), provider=self.provider
            )
        except OAuthError as exc:
            logger.warning("OAuth redirect for %s rejected: %s", self.provider, exc)
            return 400, "Login failed", str(exc)
        if params.get("error"):
            return 200, "Login failed", f"The provider reported: {params['error']}"
        return 200, "Login received", "cliproxy is finishing the login. You can close this window."

    def _serve(self) -> None:
        try:
            while self.owner.keep_serving(self):
                self.server.handle_request()
        finally:
            self.server.server_close()
            logger.info("closed the %s login redirect listener", self.provider)


class CallbackListeners:
    """Per-provider redirect listeners, opened on demand.

    `ports` overrides a provider's callback port (tests use free ports; the real ports are
    fixed by each provider's registered redirect URI). `registry` returns the login registry
    the redirects go to.
    """

    def __init__(
        self,
        registry: Callable[[], LoginRegistry | None],
        *,
        ports: Mapping[str, int] | None = None,
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self._ports = dict(ports or {})
        self._ttl = ttl
        self._clock = clock
        self._listeners: dict[str, _Listener] = {}
        self._lock = threading.Lock()
        self._stopped = False

    def expect(self, provider_name: str, state: str) -> bool:
        """Listen for the redirect of login `state`; return False when the port is taken."""
        provider = get_provider(provider_name)
        port = self._ports.get(provider.name, provider.callback_port)
        with self._lock:
            listener = self._listeners.get(provider.name)
            if listener is None or listener.closed:
                try:
                    listener = _Listener(
                        port, urlsplit(provider.redirect_uri).path, provider.name, self
                    )
                except OSError as exc:
                    logger.warning(
                        "cannot listen for %s login redirects on 127.0.0.1:%d (%s); "
                        "finish the login with POST /v0/management/oauth-callback",
                        provider.name,
                        port,
                        exc,
                    )
                    return False
                self._listeners[provider.name] = listener
                listener.thread.start()
                logger.info(
                    "listening for %s login redirects on 127.0.0.1:%d", provider.name, port
                )
            listener.states.add(state)
            listener.deadline = self._clock() + self._ttl
        return True

    def is_listening(self, provider_name: str) -> bool:
        """Return True while the provider's listener serves."""
        with self._lock:
            listener = self._listeners.get(get_provider(provider_name).name)
            return listener is not None and not listener.closed

    def keep_serving(self, listener: _Listener) -> bool:
        """Return whether `listener` still has a pending login; mark it closed otherwise."""
        registry = self.registry()
        with self._lock:
            if registry is not None:
                listener.states = {
                    state
                    for state in listener.states
                    if registry.status(state).get("status") == "wait"
                }
            if self._stopped or not listener.states or self._clock() >= listener.deadline:
                listener.closed = True
                return False
            return True

    def close(self) -> None:
        """Stop every listener within one poll interval (0.2 s)."""
        with self._lock:
            self._stopped = True
