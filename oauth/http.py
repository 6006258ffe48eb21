"""HTTP settings for the OAuth layer: timeout, TLS verification and outbound proxy.

Token, userinfo and Code Assist requests all go through sessions built here, so one
`HttpSettings` value controls how the OAuth layer reaches the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import requests


@dataclass(frozen=True)
class HttpSettings:
    """Transport settings for OAuth HTTP requests.

    `timeout` is in seconds and applies to connecting and to each read. `verify` is passed to
    requests: True for the system CA store, or a path to a CA bundle (tests use the fake
    server's certificate). `proxy_url` is an http(s) or socks5 proxy URL; "direct" or "none"
    ignores proxy environment variables; empty uses the environment as requests does.
    """

    timeout: float = 30.0
    verify: bool | str = True
    proxy_url: str = ""

    def configure(self, session: requests.Session) -> requests.Session:
        """Apply these settings to `session` and return it."""
        session.verify = self.verify
        if self.proxy_url in ("direct", "none"):
            session.trust_env = False
            session.proxies = {}
        elif self.proxy_url:
            session.proxies = {"http": self.proxy_url, "https": self.proxy_url}
        return session

    def new_session(self) -> requests.Session:
        """Return a new requests session with these settings applied."""
        return self.configure(requests.Session())
