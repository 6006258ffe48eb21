"""The management API addon: it responds to `/v0/management/*` itself and never connects upstream.

`requestheaders` marks management flows (and rejects oversized bodies early); the async
`request` hook hands the request to `mgmt.service.ManagementService` in a worker thread,
because bcrypt checks, config writes and `/api-call` block, and sets `flow.response`.
Addons after this one must leave flows that already have a response alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http

from addons.runtime import Runtime
from config import Config
from mgmt.context import ConfigAccess, LogSource, MgmtContext, NoUsage, UsageSource
from mgmt.keys import ENV_PASSWORD, GeneratedKeyStore, ManagementKeys
from mgmt.router import PREFIX, MgmtRequest, MgmtResponse, error
from mgmt.service import ManagementService, SecretKeyHasher
from oauth.errors import InvalidConfig
from oauth.flow import LoginRegistry
from oauth.http import HttpSettings
from oauth.providers import resolve_endpoints

logger = logging.getLogger(__name__)

METADATA_KEY = "cliproxy.management"
# Largest management request body; auth files are capped at 1 MiB each, and a multipart
# upload of several files stays below this.
MAX_BODY_BYTES = 16 * 1024 * 1024


def is_management_path(path: str) -> bool:
    """Return True for `/v0/management` and everything below it (query string ignored)."""
    return path.split("?", 1)[0].startswith(PREFIX)


def to_mgmt_request(flow: http.HTTPFlow) -> MgmtRequest:
    """Build the handler-side request from a mitmproxy flow; the peer is the socket address."""
    request = flow.request
    peer_ip = flow.client_conn.peername[0] if flow.client_conn.peername else ""
    return MgmtRequest.build(
        request.method,
        request.path,
        headers={name: value for name, value in request.headers.items()},
        body=request.get_content(strict=False) or b"",
        peer_ip=str(peer_ip),
    )


def to_http_response(response: MgmtResponse) -> http.Response:
    return http.Response.make(response.status, response.content(), response.all_headers())


class Management:
    """Serves the management API from the shared runtime's config, keys and pool."""

    def __init__(
        self,
        runtime: Runtime,
        usage: UsageSource | None = None,
        logs: LogSource | None = None,
    ) -> None:
        self.runtime = runtime
        self.usage = usage or NoUsage()
        self.logs = logs
        self.service: ManagementService | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._release_url = ""
        self._logins: LoginRegistry | None = None
        self._logins_key: tuple[object, ...] | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "cliproxy_release_url",
            str,
            "",
            """
            URL of a GitHub-style "latest release" JSON document (with tag_name) that
            GET /v0/management/latest-version reads. Empty disables that route.
            """,
        )
        loader.add_option(
            "cliproxy_management_threads",
            int,
            8,
            "Worker threads for management API requests (key checks, file writes, api-call).",
        )

    def configure(self, updated: set[str]) -> None:
        if "cliproxy_release_url" in updated:
            url = ctx.options.cliproxy_release_url.strip()
            if url and urlsplit(url).scheme not in ("http", "https"):
                raise exceptions.OptionsError(
                    f"cliproxy_release_url {url!r} is invalid: use an http:// or https:// URL"
                )
            self._release_url = url
            if self.service is not None:
                self.service.ctx.release_url = url
        if "cliproxy_management_threads" in updated:
            threads = ctx.options.cliproxy_management_threads
            if threads < 1:
                raise exceptions.OptionsError(
                    f"cliproxy_management_threads is {threads}: use 1 or more"
                )
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            self._executor = ThreadPoolExecutor(threads, thread_name_prefix="cliproxy-mgmt")

    def build_service(self) -> ManagementService:
        """Create the service once the runtime has loaded its config."""
        if self.service is not None:
            return self.service
        runtime = self.runtime

        def replace_text(text: str) -> Config:
            config = runtime.config_file.replace_text(text)
            runtime.apply(config)
            return config

        config = ConfigAccess(
            runtime.config_file, lambda: runtime.cfg, runtime.update_config, replace_text
        )
        store = GeneratedKeyStore(runtime.config_file.path.parent)
        keys = ManagementKeys(
            lambda: runtime.cfg.remote_management.secret_key,
            os.environ.get(ENV_PASSWORD),
            store.load_or_create(),
        )
        mgmt_ctx = MgmtContext(
            config=config,
            keys=keys,
            pool=runtime.pool,
            reload_accounts=runtime.reload_accounts,
            usage=self.usage,
            logs=self.logs,
            release_url=self._release_url,
            logins=self.login_registry,
        )
        self.service = ManagementService(mgmt_ctx)
        hasher = SecretKeyHasher(config)
        runtime.listeners.append(lambda _config: hasher.run())
        hasher.run()
        return self.service

    def login_registry(self) -> LoginRegistry | None:
        """Return the OAuth login registry for the current auth directory and endpoints.

        A config change of the auth directory, endpoints or proxy URL replaces the registry;
        logins pending in the old one are then lost.
        """
        config = self.runtime.cfg
        key = (config.auth_dir, repr(config.oauth_endpoints), config.proxy_url)
        if self._logins is not None and self._logins_key == key:
            return self._logins
        try:
            endpoints = resolve_endpoints(config.oauth_endpoints)
        except InvalidConfig as exc:
            logger.error("OAuth logins unavailable: %s", exc)
            return None
        if self._logins is not None:
            self._logins.close()
        self._logins = LoginRegistry(
            config.auth_dir,
            endpoints,
            http=HttpSettings(proxy_url=config.proxy_url),
            on_saved=lambda _path, _provider: self.runtime.reload_accounts(),
        )
        self._logins_key = key
        return self._logins

    def running(self) -> None:
        if self.runtime.config is not None:
            self.build_service()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not is_management_path(flow.request.path):
            return
        flow.metadata[METADATA_KEY] = True
        length = flow.request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            flow.response = to_http_response(error(413, "request body is larger than 16 MiB"))
            flow.response.headers["Connection"] = "close"

    async def request(self, flow: http.HTTPFlow) -> None:
        if not flow.metadata.get(METADATA_KEY) or flow.response is not None:
            return
        service = self.build_service()
        mgmt_request = to_mgmt_request(flow)
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(self._executor, service.handle, mgmt_request)
        flow.response = to_http_response(response)

    def done(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._logins is not None:
            self._logins.close()
