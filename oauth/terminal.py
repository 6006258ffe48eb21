"""`cliproxy login`: an interactive OAuth login in the terminal.

The command prints the authorization URL, opens it in a browser unless `--no-browser` is
set, and waits for whichever comes first:

- the provider's redirect to the registered localhost callback port, caught by a one-shot
  listener on 127.0.0.1 (the browser must run on this machine);
- the redirected URL, or just the code, pasted into the terminal (remote or headless use,
  and Claude's manual flow that shows `code#state`).

It then exchanges the code, looks up the account's identity and writes the account file into
the config's auth directory.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from config import ConfigError, ConfigFile
from oauth.authfiles import write_account_file
from oauth.clock import utc_now
from oauth.errors import OAuthError
from oauth.flow import LOGIN_TTL, CallbackParams, LoginSession, complete, start
from oauth.http import HttpSettings
from oauth.identity import identity_for
from oauth.providers import get_provider, resolve_endpoints

logger = logging.getLogger(__name__)

_SUCCESS_PAGE = (
    b"<!doctype html><meta charset=utf-8><title>cliproxy login</title>"
    b"<p>Login received. You can close this tab and return to the terminal.</p>"
)


class CallbackListener:
    """A one-shot HTTP server on 127.0.0.1 that catches the provider's redirect.

    Each GET of `path` puts its query as CallbackParams into `results`. Raises OSError from
    `start()` when the port is taken.
    """

    def __init__(self, port: int, path: str, results: queue.Queue[CallbackParams | str]) -> None:
        self._port = port
        self._path = path
        self._results = results
        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when constructed with port 0)."""
        assert self._server is not None, "start() the listener first"
        return self._server.server_address[1]

    def start(self) -> None:
        """Bind the port and serve in a daemon thread."""
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                parts = urlsplit(self.path)
                if parts.path != listener._path:
                    self.send_error(404)
                    return
                values = parse_qs(parts.query)
                listener._results.put(
                    CallbackParams(
                        code=_first(values, "code"),
                        state=_first(values, "state"),
                        error=_first(values, "error"),
                        error_description=_first(values, "error_description"),
                    )
                )
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(_SUCCESS_PAGE)))
                self.end_headers()
                self.wfile.write(_SUCCESS_PAGE)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base class signature
                return

        self._server = HTTPServer(("127.0.0.1", self._port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="oauth-callback",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def login(
    config_file: ConfigFile,
    provider: str,
    *,
    open_browser: bool = True,
    project_id: str | None = None,
    listen: bool = True,
    callback_port: int | None = None,
    input_stream: TextIO | None = None,
    output: TextIO | None = None,
    http: HttpSettings | None = None,
    timeout: float = LOGIN_TTL.total_seconds(),
) -> int:
    """Run an interactive login and write the account file; return the process exit code.

    Returns 0 on success, 1 when the login failed or timed out after `timeout` seconds, and
    2 for an unusable config. `callback_port` overrides the port the listener binds; only
    tests need it, because providers redirect to the registered port. `http` defaults to the
    config's `proxy-url`.
    """
    out = output or sys.stdout
    try:
        config = config_file.load()
        endpoints = resolve_endpoints(config.oauth_endpoints)
        provider_oauth = get_provider(provider)
    except (ConfigError, OAuthError) as exc:
        print(f"cliproxy: {exc}", file=out)
        return 2
    http = http or HttpSettings(proxy_url=config.proxy_url)

    session = start(provider_oauth, endpoints)
    results: queue.Queue[CallbackParams | str] = queue.Queue()
    listener = _start_listener(session, callback_port, results, out) if listen else None
    try:
        print(f"Open this URL in a browser to log in to {provider_oauth.name}:\n\n{session.url}\n", file=out)
        if listener is None:
            print("Then paste the URL the browser ends on (or the code) here and press Enter:", file=out)
        else:
            print(
                f"Waiting for the browser to return to http://localhost:{listener.port}"
                f"{urlsplit(provider_oauth.redirect_uri).path}. On another machine, paste the URL "
                "the browser ends on (or the code) here and press Enter.",
                file=out,
            )
        out.flush()
        if open_browser:
            webbrowser.open(session.url)
        _read_pasted_line(input_stream or sys.stdin, results)

        try:
            received = results.get(timeout=timeout)
        except queue.Empty:
            print(
                f"cliproxy: no callback arrived within {int(timeout)} seconds; run the login again",
                file=out,
            )
            return 1
    finally:
        if listener is not None:
            listener.stop()

    try:
        tokens = complete(session, received, http=http)
        identity = identity_for(
            provider_oauth, tokens, session.endpoints, http, project_id=project_id or None
        )
        path = write_account_file(
            config.auth_dir, provider_oauth, tokens, identity, endpoints=session.endpoints, now=utc_now()
        )
    except OAuthError as exc:
        print(f"cliproxy: login failed: {exc}", file=out)
        return 1
    except OSError as exc:
        print(f"cliproxy: login succeeded but the account file could not be written: {exc}", file=out)
        return 1
    print(f"Saved the {provider_oauth.name} login of {identity.email} to {path}", file=out)
    return 0


def _start_listener(
    session: LoginSession,
    callback_port: int | None,
    results: queue.Queue[CallbackParams | str],
    out: TextIO,
) -> CallbackListener | None:
    provider = session.provider
    port = provider.callback_port if callback_port is None else callback_port
    listener = CallbackListener(port, urlsplit(provider.redirect_uri).path, results)
    try:
        listener.start()
    except OSError as exc:
        print(f"cliproxy: cannot listen on 127.0.0.1:{port} ({exc}); paste the URL instead", file=out)
        return None
    return listener


def _read_pasted_line(stream: TextIO, results: queue.Queue[CallbackParams | str]) -> None:
    """Read the first non-empty line of `stream` in a daemon thread and queue it."""

    def read() -> None:
        try:
            for line in stream:
                if line.strip():
                    results.put(line.strip())
                    return
        except (OSError, ValueError) as exc:
            logger.debug("stopped reading pasted input: %s", exc)

    threading.Thread(target=read, name="oauth-paste", daemon=True).start()


def _first(values: dict[str, list[str]], key: str) -> str | None:
    items = values.get(key)
    return items[0] if items and items[0] else None
