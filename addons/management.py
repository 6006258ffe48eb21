"""The management API addon: serves `/v0/management/*` locally, never from upstream.

`requestheaders` marks management flows and rejects oversized bodies early. The async
`request` hook runs `mgmt.service.ManagementService` in a worker thread, because bcrypt
checks, config writes and `/api-call` block, and then sets `flow.response`. Addons after this
one must leave flows that already have a response alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http

from addons.runtime import Runtime
from config import Config
from mgmt.context import ConfigAccess, LogSource, MgmtContext, NoUsage, UsageSource
from mgmt.keys import ENV_PASSWORD, GeneratedKeyStore, ManagementKeys
from mgmt.oauth_callback import CallbackListeners
from mgmt.router import PREFIX, HttpError, MgmtRequest, MgmtResponse, error
from mgmt.service import ManagementService, SecretKeyHasher
from oauth.errors import InvalidConfig
from oauth.flow import LoginRegistry
from oauth.http import HttpSettings
from oauth.providers import resolve_endpoints
from pool import Account
from providers.catalog import CATALOG

logger = logging.getLogger(__name__)

METADATA_KEY = "cliproxy.management"
# Largest management request body; auth files are capped at 1 MiB each, and a multipart
# upload of several files stays below this.
MAX_BODY_BYTES = 16 * 1024 * 1024
# Maximum wait, in seconds, of an `/api-call` for its account's token refresh.
TOKEN_REFRESH_TIMEOUT_SECONDS = 30.0


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


class RuntimeUsage:
    """The runtime's current usage store as a `UsageSource`; zeros while there is none."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def _store(self) -> Any:
        return getattr(self.runtime, "usage_store", None)

    def aggregate(self) -> Mapping[str, Any]:
        store = self._store()
        return store.aggregate() if store is not None else NoUsage().aggregate()

    def export(self) -> Mapping[str, Any]:
        store = self._store()
        if store is None:
            raise HttpError(404, "usage statistics unavailable")
        return store.export()

    def import_(self, data: dict[str, Any]) -> Mapping[str, Any]:
        store = self._store()
        if store is None:
            raise HttpError(400, "usage statistics unavailable")
        return store.import_(data)

    def queue_pop(self, count: int) -> list[dict[str, Any]]:
        store = self._store()
        if store is None:
            raise HttpError(404, "usage statistics unavailable")
        return store.queue_pop(count)


class Management:
    """The management API over the shared runtime's config, keys, pool and stores."""

    def __init__(
        self,
        runtime: Runtime,
        usage: UsageSource | None = None,
        logs: LogSource | None = None,
    ) -> None:
        """`usage` and `logs` default to the runtime's usage store and application log."""
        self.runtime = runtime
        self.usage = usage or RuntimeUsage(runtime)
        self.logs = logs if logs is not None else getattr(runtime, "app_log", None)
        self.service: ManagementService | None = None
        self._service_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._release_url = ""
        self._logins: LoginRegistry | None = None
        self._logins_key: tuple[object, ...] | None = None
        self._logins_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.oauth_redirects = CallbackListeners(self.login_registry)

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
        """Return the service, creating it on first use (the runtime must have loaded)."""
        with self._service_lock:
            if self.service is None:
                self.service = self._create_service()
            return self.service

    def _create_service(self) -> ManagementService:
        runtime = self.runtime
        config = ConfigAccess(
            runtime.config_file, lambda: runtime.cfg, runtime.update_config, runtime.replace_config_text
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
            auth_problems=lambda: runtime.auth_problems,
            usage=self.usage,
            logs=self.logs,
            release_url=self._release_url,
            logins=self.login_registry,
            oauth_redirects=self.oauth_redirects,
            fresh_token=self.fresh_token,
            model_catalog=lambda: CATALOG,
            request_log_dir=self._request_log_dir,
        )
        service = ManagementService(mgmt_ctx)
        hasher = SecretKeyHasher(config)
        runtime.listeners.append(lambda _config: self._run_in_worker(hasher.run))
        hasher.run()
        return service

    def _request_log_dir(self) -> Path:
        writer = getattr(self.runtime, "request_log", None)
        if writer is not None:
            return Path(writer.directory)
        return self.runtime.cfg.directory / "logs"

    def _run_in_worker(self, job: Callable[[], object]) -> None:
        # Config listeners also run on the event loop (file watcher); bcrypt and the file
        # write would stall every flow for ~50 ms there.
        if self._executor is not None:
            self._executor.submit(job)
        else:
            job()

    def login_registry(self) -> LoginRegistry | None:
        """Return the OAuth login registry for the current auth directory and endpoints.

        A config change of the auth directory, endpoints or proxy URL replaces the registry;
        logins pending in the old one are then lost.
        """
        config = self.runtime.cfg
        key = (config.auth_dir, repr(config.oauth_endpoints), config.proxy_url)
        with self._logins_lock:
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

    def fresh_token(self, account: Account) -> str:
        """Return `account`'s access token, refreshed on the event loop when it has expired.

        Called from management worker threads, never from the event loop itself.
        """
        loop = self._loop
        if loop is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(
                self.runtime.tokens.ensure_fresh(account), loop
            )
            try:
                future.result(timeout=TOKEN_REFRESH_TIMEOUT_SECONDS)
            except Exception as exc:  # the refresh path logs its own OAuth errors
                logger.warning(
                    "refreshing the token of %s for api-call failed: %s", account.label, exc
                )
        return account.secret

    def running(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None  # driven without an event loop (tests)
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

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        # A plain method that returns a coroutine only for management flows: mitmproxy awaits
        # what a hook returns, and every other request skips the coroutine's cost.
        if not flow.metadata.get(METADATA_KEY) or flow.response is not None:
            return None
        return self._answer(flow)

    async def _answer(self, flow: http.HTTPFlow) -> None:
        service = self.build_service()
        mgmt_request = to_mgmt_request(flow)
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(self._executor, service.handle, mgmt_request)
        flow.response = to_http_response(response)

    def done(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self.oauth_redirects.close()
        if self._logins is not None:
            self._logins.close()
