"""The management API as one object: access checks in front of the route table.

`ManagementService.handle()` takes a `MgmtRequest` and returns a `MgmtResponse`; it blocks
(bcrypt, file writes, outbound calls), so the proxy calls it from a worker thread.
"""

from __future__ import annotations

import logging
import threading

from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from config import ConfigError
from mgmt import apikeys, authfiles, logs, oauth, settings, tools, usage, vertex
from mgmt.context import ConfigAccess, MgmtContext
from mgmt.keys import hash_key, is_bcrypt_hash
from mgmt.router import MgmtRequest, MgmtResponse, Router
from mgmt.security import FailedAuthTracker, ManagementGuard

logger = logging.getLogger(__name__)


def build_router(ctx: MgmtContext) -> Router:
    """Return a router with every management route bound to `ctx`."""
    router = Router()
    for module in (settings, apikeys, authfiles, vertex, usage, logs, tools, oauth):
        module.register(router, ctx)
    return router


class ManagementService:
    """Guard plus router: the whole `/v0/management` API for one proxy."""

    def __init__(self, ctx: MgmtContext, tracker: FailedAuthTracker | None = None) -> None:
        self.ctx = ctx
        self.router = build_router(ctx)
        self.guard = ManagementGuard(
            ctx.keys,
            allow_remote=lambda: ctx.config.current().remote_management.allow_remote,
            listen_port=lambda: ctx.config.current().port,
            tracker=tracker,
        )

    def handle(self, request: MgmtRequest) -> MgmtResponse:
        """Check access, run the handler, and add CORS headers for the proxy's own origin."""
        refusal = self.guard.check(request)
        if refusal is not None:
            if refusal.status >= 400:
                logger.info(
                    "management API: rejected %s %s from %s with %d",
                    request.method,
                    request.path,
                    request.peer_ip,
                    refusal.status,
                )
            return refusal
        response = self.router.dispatch(request)
        response.headers.update(self.guard.cors_headers(request))
        logger.debug(
            "management API: %s %s -> %d", request.method, request.path, response.status
        )
        return response


class SecretKeyHasher:
    """Replaces a plaintext `remote-management.secret-key` with its bcrypt hash on disk.

    CLIProxyAPI does the same on every load, and desktop apps such as Quotio write the
    plaintext back before each start, so this runs after every config load. Until the hash
    is written the plaintext value still verifies.
    """

    def __init__(self, config: ConfigAccess) -> None:
        self.config = config
        self._lock = threading.Lock()

    def run(self) -> bool:
        """Hash and write back a plaintext secret; return True when the file changed."""
        if not self._lock.acquire(blocking=False):
            return False  # the write below re-applies the config and lands here again
        try:
            return self._hash_once()
        finally:
            self._lock.release()

    def _hash_once(self) -> bool:
        secret = self.config.current().remote_management.secret_key
        if not secret or is_bcrypt_hash(secret):
            return False
        try:
            hashed = hash_key(secret)
        except ValueError as exc:
            logger.error("%s; the plaintext key stays in the config file", exc)
            return False

        def mutate(document: object) -> None:
            section = document.get("remote-management")  # type: ignore[attr-defined]
            if isinstance(section, dict) and section.get("secret-key") == secret:
                section["secret-key"] = DoubleQuotedScalarString(hashed)

        try:
            self.config.edit(mutate)
        except (ConfigError, OSError) as exc:
            logger.error(
                "writing the hashed management key to %s failed: %s", self.config.file.path, exc
            )
            return False
        logger.info(
            "replaced the plaintext remote-management.secret-key in %s with its bcrypt hash",
            self.config.file.path,
        )
        return True
