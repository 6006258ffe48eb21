"""The request log tap: one record per client request, for usage statistics, request logs and metrics.

When a request ends (the `response` or `error` hook), the tap turns its `FlowState` into a
`store.records.RequestRecord` and hands it to:

- the usage store: `usage.db` (SQLite in WAL mode) in the config directory, written by a
  background thread. `usage-statistics-enabled: false` stops recording, and records older than
  `usage-retention-days` are deleted;
- the Prometheus metrics served at `GET /metrics`;
- the request log under `<config dir>/logs/`. With `request-log: true` each request gets its
  own file, written while the request runs, and a streamed response is appended chunk by chunk.
  Otherwise only failed requests are written, as `error-*.log`, and the newest
  `error-logs-max-files` of them are kept. A file stops at 16 MiB. The directory is kept under
  `logs-max-total-size-mb`, or under 1 GiB when that key is 0 or missing. Requests that the
  gate rejected are logged without their body (addons/requestlog.py).

Token counts come from the upstream's own usage fields. A buffered JSON response is parsed once
when it ends. A streamed response is read by an `SSEUsageObserver` that the failover addon's
`StreamTee` feeds, so the stream is never held back. A stream without usage is recorded with
unknown usage (None), never as zero tokens.

The tap records every request that presented a valid proxy key and every request the gate
rejected. Model lists count in the metrics only. Open routes (`/`, `/healthz`, CORS
preflights), management API calls and `/metrics` itself are not recorded.

Request log files are written by one background thread, so no hook waits for those disk
writes. `runtime.redactor` masks every proxy key, account secret and management key in them,
in the usage records' failure reasons and in the application and terminal logs. The tap
refreshes that list on config and account reloads.

`GET /metrics` needs the management key (`Authorization: Bearer …` or `X-Management-Key`),
checked by the management API's guard with the same rules: callers other than loopback also
need `remote-management.allow-remote: true`, and repeated wrong keys lock an address out. With
`metrics-allow-loopback: true` in config.yaml, loopback callers need no key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import http

from addons import flowstate
from addons.flowstate import FlowState, flow_state
from addons.requestlog import RequestLogger
from addons.runtime import Runtime
from config import Config
from mgmt.keys import ENV_PASSWORD, GeneratedKeyStore, ManagementKeys
from mgmt.router import MgmtRequest, MgmtResponse
from mgmt.security import ManagementGuard, is_loopback
from pool import Account, AccountState
from pool.loader import auth_index
from providers.dialects import Dialect, Operation
from providers.usage import SSEUsageObserver, Usage, UsageFormat, parse_json_usage
from store.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from store.records import Attempt, Outcome, RequestRecord
from store.report import usage_database_path
from store.request_log import RequestLogWriter
from store.usage_db import UsageStoreError
from store.usage_store import UsageStore

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
LOGS_DIRECTORY_NAME = "logs"
DEFAULT_LOGS_MAX_TOTAL_BYTES = 1 << 30
METRICS_LOOPBACK_KEY = "metrics-allow-loopback"

# The upstream's usage format. It equals the client's dialect, because cliproxy sends each
# request to an upstream that speaks the client's API.
USAGE_FORMATS = {
    Dialect.ANTHROPIC: UsageFormat.ANTHROPIC,
    Dialect.OPENAI_CHAT: UsageFormat.OPENAI_CHAT,
    Dialect.OPENAI_RESPONSES: UsageFormat.OPENAI_RESPONSES,
    Dialect.GEMINI: UsageFormat.GEMINI,
}
MODEL_LIST_OPERATIONS = frozenset({Operation.LIST_MODELS, Operation.GET_MODEL})

# Starts of mitmproxy's error messages when the client closed the connection (HTTP/1 and 2).
CLIENT_GONE_MESSAGES = ("Client disconnected", "stream reset by client")

# Loggers of cliproxy's own packages. Their messages may quote upstream error texts, which
# can echo a credential.
CLIPROXY_LOGGERS = ("addons", "config", "mgmt", "oauth", "pool", "providers", "store")


class IncrementalDecoder:
    """Decodes a gzip or deflate response body chunk by chunk; None for other encodings.

    After a decoding error it returns b"" for the rest of the stream.
    """

    def __init__(self, decompressor: Any) -> None:
        self._decompressor = decompressor
        self.failed = False

    @classmethod
    def for_encoding(cls, content_encoding: str) -> IncrementalDecoder | None:
        name = content_encoding.strip().lower()
        if name in ("gzip", "x-gzip"):
            return cls(zlib.decompressobj(16 + zlib.MAX_WBITS))
        if name == "deflate":
            return cls(zlib.decompressobj())
        return None

    def __call__(self, chunk: bytes) -> bytes:
        if self.failed:
            return b""
        try:
            return self._decompressor.decompress(chunk)
        except zlib.error:
            self.failed = True
            return b""


class _ProxyConnectionFilter(logging.Filter):
    """Keeps mitmproxy's per-connection info lines ("client connect", ...) out of the app log.

    Warnings and errors always pass, and `debug: true` lets everything pass.
    """

    def __init__(self) -> None:
        super().__init__()
        self.keep_all = False

    def filter(self, record: logging.LogRecord) -> bool:
        return (
            self.keep_all
            or record.levelno >= logging.WARNING
            or not record.name.startswith("mitmproxy.proxy")
        )


class _RedactingFilter(logging.Filter):
    """Replaces known secrets in cliproxy's log records before other handlers print them.

    It is attached to the handlers that mitmproxy put on the root logger (the terminal log).
    Records of other loggers pass unchanged, which keeps mitmproxy's per-connection lines cheap.
    """

    def __init__(self, redact: Callable[[str], str]) -> None:
        super().__init__()
        self._redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(CLIPROXY_LOGGERS):
            message = record.getMessage()
            redacted = self._redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


def known_secrets(
    config: Config, accounts: Iterable[Account], management_keys: Iterable[str]
) -> set[str]:
    """Return every secret the logs must never show: proxy keys, account credentials, the
    management keys and passwords in proxy URLs."""
    secrets = set(config.api_keys)
    secrets.update(management_keys)
    if config.remote_management.secret_key:
        secrets.add(config.remote_management.secret_key)
    proxy_urls = [config.proxy_url]
    for account in accounts:
        secrets.update(_account_secrets(account))
        proxy_urls.append(account.proxy_url)
        for name, value in account.headers.items():
            if _is_secret_name(name) and not value.startswith("$"):
                secrets.add(value)
    for url in proxy_urls:
        if url and "@" in url:
            try:
                password = urlsplit(url).password
            except ValueError:
                continue
            if password:
                secrets.add(password)
    secrets.discard("")
    return secrets


def _account_secrets(account: Account) -> list[str]:
    values = [account.secret, account.refresh_token]
    token = account.data.get("token")
    for source in (account.data, token if isinstance(token, dict) else {}):
        for name in ("access_token", "refresh_token", "id_token", "api_key"):
            value = source.get(name)
            if isinstance(value, str):
                values.append(value)
    return [value for value in values if value]


def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(marker in lowered for marker in ("authorization", "key", "token", "secret", "cookie"))


def request_outcome(state: FlowState, response: http.Response | None, error: Any) -> Outcome:
    """Classify how a request ended, from the client's point of view."""
    if state.outcome == "rejected":
        return Outcome.REJECTED
    if error is not None:
        if str(error.msg).startswith(CLIENT_GONE_MESSAGES):
            return Outcome.CLIENT_DISCONNECTED
        return Outcome.UPSTREAM_ERROR if state.account is not None else Outcome.PROXY_ERROR
    status = response.status_code if response is not None else 0
    if response is not None and status < 400:
        return Outcome.SUCCESS
    if state.attempts:
        return Outcome.UPSTREAM_ERROR
    # cliproxy sent its own response: 429 (every account cooling) and 5xx are its failures,
    # any other 4xx is a client error (unknown route or model, invalid body).
    if status == 429 or status >= 500 or status == 0:
        return Outcome.PROXY_ERROR
    return Outcome.REJECTED


class Tap:
    """Records every finished request, writes request logs and serves `GET /metrics`."""

    def __init__(self, runtime: Runtime, failover: Any = None, management: Any = None) -> None:
        self.runtime = runtime
        self.management = management
        self.statistics_enabled = True
        self.metrics_allow_loopback = False
        self.request_logger = RequestLogger(runtime, self._register_account)
        self._storage_directory: Path | None = None
        self._app_log_directory: Path | None = None
        self._connection_filter = _ProxyConnectionFilter()
        self._redacting_filter = _RedactingFilter(runtime.redactor.redact_text)
        self._filtered_handlers: list[logging.Handler] = []
        self._auth_indexes: dict[str, str] = {}
        self._secrets_lock = threading.Lock()
        self._registered_secrets: set[str] = set()
        self._management_secrets: tuple[str, ...] = ()
        self._guard: ManagementGuard | None = None
        self._guard_lock = threading.Lock()

        runtime.listeners.append(self.apply_config)
        runtime.account_listeners.append(self.refresh_secrets)
        if failover is not None:
            failover.stream_observers.append(self.stream_observer)
        if runtime.config is not None:
            self.apply_config(runtime.config)

    # Lifecycle

    def load(self, loader: Any) -> None:
        root = logging.getLogger()
        for other in root.handlers:
            other.addFilter(self._redacting_filter)
            self._filtered_handlers.append(other)
        handler = self.runtime.app_log
        handler.addFilter(self._connection_filter)
        root.addHandler(handler)

    def running(self) -> None:
        # The management addon creates the generated management key in its `running`, which
        # comes first in the chain, so the key can be registered for redaction now.
        self._load_management_secrets()
        self.refresh_secrets()

    def done(self) -> None:
        self.request_logger.close()
        store = self.runtime.usage_store
        if store is not None:
            store.close()
        handler = self.runtime.app_log
        logging.getLogger().removeHandler(handler)
        handler.close()
        for other in self._filtered_handlers:
            other.removeFilter(self._redacting_filter)
        self._filtered_handlers.clear()

    # Configuration

    def apply_config(self, config: Config) -> None:
        """Apply the tap's config keys; runs on every config load and live reload."""
        runtime = self.runtime
        self.statistics_enabled = config.usage_statistics_enabled
        self.metrics_allow_loopback = _metrics_allow_loopback(config)

        if self._storage_directory != config.directory:
            self._open_storage(config)
        elif runtime.usage_store is not None:
            runtime.usage_store.retention_days = config.usage_retention_days

        writer = runtime.request_log
        if writer is not None:
            writer.full = config.request_log
            writer.error_files_kept = config.error_logs_max_files
            writer.max_dir_bytes = _logs_max_total_bytes(config)

        app_log = runtime.app_log
        app_log.setLevel(logging.DEBUG if config.debug else logging.INFO)
        self._connection_filter.keep_all = config.debug
        app_log_directory = None
        if config.logging_to_file:
            app_log_directory = config.directory / LOGS_DIRECTORY_NAME
        if app_log_directory != self._app_log_directory:
            app_log.set_directory(app_log_directory)
            self._app_log_directory = app_log_directory

        self.refresh_secrets()

    def _open_storage(self, config: Config) -> None:
        runtime = self.runtime
        old_store = runtime.usage_store
        path = usage_database_path(config.directory)
        try:
            runtime.usage_store = UsageStore(path, retention_days=config.usage_retention_days)
        except UsageStoreError as error:
            logger.error("usage statistics are not recorded: %s", error)
            runtime.usage_store = None
        if old_store is not None:
            old_store.close()

        runtime.request_log = RequestLogWriter(
            config.directory / LOGS_DIRECTORY_NAME,
            runtime.redactor,
            full=config.request_log,
            max_dir_bytes=_logs_max_total_bytes(config),
            error_files_kept=config.error_logs_max_files,
        )
        self._storage_directory = config.directory
        self._management_secrets = ()
        self._load_management_secrets()

    def _load_management_secrets(self) -> None:
        config = self.runtime.config
        if config is None:
            return
        values = [os.environ.get(ENV_PASSWORD, "").strip()]
        try:
            values.append(GeneratedKeyStore(config.directory).load() or "")
        except Exception as error:  # noqa: BLE001 - keyring backends raise their own types
            logger.warning("reading the generated management key for redaction failed: %s", error)
        self._management_secrets = tuple(value for value in values if value)

    def refresh_secrets(self) -> None:
        """Register the current proxy keys, account secrets and management keys for redaction."""
        config = self.runtime.config
        if config is None:
            return
        secrets = known_secrets(config, self.runtime.pool.accounts(), self._management_secrets)
        with self._secrets_lock:
            self._registered_secrets = secrets
            self.runtime.redactor.set_secrets(secrets)

    def _register_account(self, account: Account | None) -> None:
        """Register an account's current tokens, which a token refresh may have replaced."""
        if account is None:
            return
        fresh = [value for value in (account.secret, account.refresh_token) if value]
        with self._secrets_lock:
            fresh = [value for value in fresh if value not in self._registered_secrets]
            if fresh:
                self._registered_secrets.update(fresh)
                self.runtime.redactor.add_secrets(fresh)

    # Hooks

    def request(self, flow: http.HTTPFlow) -> Any:
        state = flow_state(flow)
        if state is None:
            if flow.request.path.split("?", 1)[0] == METRICS_PATH:
                return self.serve_metrics(flow)
            return None
        if _is_recorded(state) and _is_usage_request(state):
            self.request_logger.start(flow, state)
        return None

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = flow_state(flow)
        if state is None or state.request_log is None:
            return
        response = flow.response
        if response is not None and callable(response.stream):
            # The body is appended as it streams, so its headers go first.
            self.request_logger.stream_started(state, response)

    def stream_observer(self, state: FlowState, flow: http.HTTPFlow) -> Callable[[bytes], None] | None:
        """Return the callback for each chunk of a streamed response (`Failover.stream_observers`)."""
        self.runtime.metrics.open_streams.inc()
        response = flow.response
        assert response is not None
        headers = response.headers

        content_encoding = headers.get("content-encoding", "").strip().lower()
        uncompressed = content_encoding in ("", "identity")
        decode = None if uncompressed else IncrementalDecoder.for_encoding(content_encoding)

        # NOTE: br and zstd streams are not decoded, and a Gemini stream requested without
        # `alt=sse` is a JSON array, not SSE. The usage of both is recorded as unknown.
        observer = None
        is_sse = headers.get("content-type", "").startswith("text/event-stream")
        if (uncompressed or decode is not None) and (state.stream or is_sse):
            observer = SSEUsageObserver(USAGE_FORMATS[state.dialect])
            state.usage_observer = observer

        session = state.request_log
        if session is None:
            if observer is None:
                return None
            if decode is None:
                return observer.feed
        feed = observer.feed if observer is not None else None
        append = self.request_logger.chunk_writer(session) if session is not None else None

        def observe(chunk: bytes) -> None:
            if decode is not None:
                chunk = decode(chunk)
            if feed is not None:
                feed(chunk)
            if append is not None:
                append(chunk)

        return observe

    def response(self, flow: http.HTTPFlow) -> None:
        state = flow_state(flow)
        if state is not None and not state.recorded:
            self.finish(flow, state)

    def error(self, flow: http.HTTPFlow) -> None:
        state = flow_state(flow)
        if state is not None and not state.recorded:
            self.finish(flow, state)

    # Finishing a request

    def finish(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """Build the request's record and hand it to the store, the metrics and the log."""
        state.recorded = True
        response = flow.response
        streamed = response is not None and callable(response.stream)
        if streamed:
            self.runtime.metrics.open_streams.dec()
        if not _is_recorded(state):
            return

        record = self.build_record(flow, state, response, streamed)
        self.runtime.metrics.observe(record)
        if not _is_usage_request(state):
            return
        store = self.runtime.usage_store
        if store is not None and self.statistics_enabled:
            store.submit(record)
        self.request_logger.finish(flow, state, record, streamed)

    def build_record(
        self, flow: http.HTTPFlow, state: FlowState, response: http.Response | None, streamed: bool
    ) -> RequestRecord:
        finished = time.perf_counter()
        error = flow.error
        account = state.account

        if state.first_byte_perf is not None:
            ttfb_ms: float | None = (state.first_byte_perf - state.started_perf) * 1000
        elif response is not None and error is None:
            # A buffered response is sent right after the response hooks.
            ttfb_ms = (finished - state.started_perf) * 1000
        else:
            ttfb_ms = None

        if streamed:
            bytes_out = state.bytes_out
        else:
            bytes_out = len(response.raw_content or b"") if response is not None else 0
        if state.original_headers is not None:
            content = state.original_content
        else:
            content = flow.request.raw_content

        route = state.route
        return RequestRecord(
            request_id=state.request_id,
            timestamp=state.started,
            # Interned: the usage queue keeps thousands of records, with few distinct names.
            route=sys.intern(route.name) if route is not None else "unknown",
            dialect=state.dialect.value,
            key_label=state.key_label,
            requested_model=sys.intern(state.requested_model),
            upstream_model=sys.intern(state.upstream_model),
            provider=account.provider if account is not None else "",
            account=account.label if account is not None else "",
            status=response.status_code if response is not None else 0,
            outcome=request_outcome(state, response, error),
            latency_ms=(finished - state.started_perf) * 1000,
            ttfb_ms=ttfb_ms,
            bytes_in=len(content or b""),
            bytes_out=bytes_out,
            usage=self._usage(state, response, streamed, error),
            stream=state.stream or streamed,
            attempts=[self._record_attempt(attempt) for attempt in state.attempts],
            auth_index=self._auth_index(account),
        )

    def _record_attempt(self, attempt: flowstate.Attempt) -> Attempt:
        # A failure reason quotes the upstream's error text, which can echo a credential.
        reason = self.runtime.redactor.redact_text(attempt.reason) if attempt.reason else ""
        return Attempt(attempt.account, attempt.status, attempt.cooldown_seconds, reason)

    def _usage(
        self, state: FlowState, response: http.Response | None, streamed: bool, error: Any
    ) -> Usage | None:
        if streamed:
            observer = state.usage_observer
            return observer.usage if observer is not None else None
        if response is None or error is not None or state.account is None:
            return None
        if response.status_code >= 400:
            return None
        body = response.get_content(strict=False) or b""
        return parse_json_usage(USAGE_FORMATS[state.dialect], body)

    def _auth_index(self, account: Account | None) -> str:
        """Return the management API's `auth_index` of a file account, "" for config accounts."""
        if account is None or account.path is None:
            return ""
        index = self._auth_indexes.get(account.id)
        if index is None:
            file_type = str(account.data.get("type", "")).lower()
            index = self._auth_indexes[account.id] = auth_index(file_type, account.path)
        return index

    # Metrics

    async def serve_metrics(self, flow: http.HTTPFlow) -> None:
        """Serve `GET /metrics` in the Prometheus text exposition format."""
        request = flow.request
        if request.method not in ("GET", "HEAD"):
            flow.response = http.Response.make(
                405, b"use GET /metrics\n", {"allow": "GET, HEAD", "content-type": "text/plain"}
            )
            return
        peer = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        metrics_request = MgmtRequest.build(
            request.method,
            request.path,
            headers={name: value for name, value in request.headers.items()},
            peer_ip=str(peer),
        )
        guard = self._management_guard()
        flow.response = await asyncio.to_thread(self._metrics_response, metrics_request, guard)

    def _management_guard(self) -> ManagementGuard | None:
        """Return the management API's guard, so both share keys and lockouts."""
        management = self.management
        if management is None or self.runtime.config is None:
            return None
        return management.build_service().guard

    def _metrics_response(self, request: MgmtRequest, guard: ManagementGuard | None) -> http.Response:
        if not (self.metrics_allow_loopback and is_loopback(request.peer_ip)):
            refusal = (guard or self._own_guard()).check(request)
            if refusal is not None:
                return _to_http_response(refusal)
        self._update_account_gauges()
        body = self.runtime.metrics.render() if request.method == "GET" else b""
        return http.Response.make(
            200, body, {"content-type": METRICS_CONTENT_TYPE, "cache-control": "no-store"}
        )

    def _own_guard(self) -> ManagementGuard:
        """Build a guard like the management API's, for a chain without the management addon."""
        with self._guard_lock:
            if self._guard is None:
                runtime = self.runtime
                keys = ManagementKeys.from_environment(
                    lambda: runtime.cfg.remote_management.secret_key,
                    GeneratedKeyStore(runtime.cfg.directory),
                )
                self._guard = ManagementGuard(
                    keys,
                    allow_remote=lambda: runtime.cfg.remote_management.allow_remote,
                    listen_port=lambda: runtime.cfg.port,
                )
            return self._guard

    def _update_account_gauges(self) -> None:
        pool = self.runtime.pool
        now = time.time()
        rows = []
        for account in pool.accounts():
            status = pool.status(account, now)
            cooldown = None
            if status.state is AccountState.COOLING and status.until is not None:
                cooldown = status.until - now
            rows.append((account.label, account.provider, status.state.value, cooldown))
        self.runtime.metrics.set_account_states(rows)


def _is_recorded(state: FlowState) -> bool:
    """Return True for requests with a valid proxy key and for gate rejections."""
    return bool(state.key_label) or state.outcome == "rejected"


def _is_usage_request(state: FlowState) -> bool:
    """Return False for model lists, which count in the metrics only."""
    return state.route is None or state.route.operation not in MODEL_LIST_OPERATIONS


def _metrics_allow_loopback(config: Config) -> bool:
    value = config.data.get(METRICS_LOOPBACK_KEY, False)
    if isinstance(value, bool):
        return value
    logger.error(
        "config key %s is %r, which is invalid: use true or false. /metrics keeps requiring "
        "the management key",
        METRICS_LOOPBACK_KEY,
        value,
    )
    return False


def _logs_max_total_bytes(config: Config) -> int:
    if config.logs_max_total_size_mb > 0:
        return config.logs_max_total_size_mb * 1024 * 1024
    return DEFAULT_LOGS_MAX_TOTAL_BYTES


def _to_http_response(response: MgmtResponse) -> http.Response:
    return http.Response.make(response.status, response.content(), response.all_headers())
