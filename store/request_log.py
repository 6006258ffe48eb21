"""Request log files: one plain-text file per proxied request, with bodies, secrets redacted.

Two modes, switchable at runtime through `RequestLogWriter.full`:
- full (`request-log: true`): every request is written to
  `<route>-<YYYY-MM-DDTHHMMSS>-<request id>.log` while it runs, and a streamed response
  body is appended chunk by chunk.
- error-only (the default): each request is captured in memory, up to
  `error_buffer_bytes`, and written as `error-<name>.log` only when it fails. The newest
  `error_files_kept` error files are kept.

A file contains these sections in the order the events happen: REQUEST, REQUEST HEADERS,
REQUEST BODY, one UPSTREAM ATTEMPT per attempt, RESPONSE HEADERS, RESPONSE BODY and END.
A file stops growing at `max_file_bytes` with a truncation marker, though END is still
written. When `max_dir_bytes` is set, the oldest finished files are deleted until the
directory fits.

Headers, the URL and bodies pass through the `Redactor`. Streamed response bodies get only
the known-secret replacement, not the token-shape rules.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from store.redact import Redactor

logger = logging.getLogger(__name__)

DEFAULT_MAX_FILE_BYTES = 16 << 20
DEFAULT_ERROR_BUFFER_BYTES = 1 << 20
DEFAULT_ERROR_FILES_KEPT = 10
ERROR_PREFIX = "error-"
LOG_SUFFIX = ".log"
# The application log may share the directory. The size limit never deletes it.
PROTECTED_NAMES = frozenset({"main.log"})

_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9]+")
_UNSAFE_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9_-]+")
_MAX_ROUTE_NAME_LENGTH = 80

Headers = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]]


def log_file_name(path: str, request_id: str, timestamp: float) -> str:
    """Return `<sanitized-path>-<YYYY-MM-DDTHHMMSS>-<request id>.log`, local time.

    For example `v1-chat-completions-2026-08-22T101530-a1b2c3d4.log`.
    """
    route = _UNSAFE_NAME_CHARACTERS.sub("-", path.partition("?")[0]).strip("-")
    route = route[:_MAX_ROUTE_NAME_LENGTH].rstrip("-") or "root"
    moment = datetime.fromtimestamp(timestamp).strftime("%Y-%m-%dT%H%M%S")
    safe_id = _UNSAFE_ID_CHARACTERS.sub("", request_id) or "no-id"
    return f"{route}-{moment}-{safe_id}{LOG_SUFFIX}"


@dataclass(frozen=True, slots=True)
class LogFileInfo:
    """A log file as the management API lists it. `modified` is epoch seconds."""

    name: str
    size: int
    modified: int


class RequestLogWriter:
    """Creates request log handles and enforces the file, directory and error-file limits.

    `max_dir_bytes` of 0 or None leaves the directory size unbounded.
    """

    def __init__(
        self,
        directory: str | Path,
        redactor: Redactor,
        *,
        full: bool = False,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_dir_bytes: int | None = None,
        error_files_kept: int = DEFAULT_ERROR_FILES_KEPT,
        error_buffer_bytes: int = DEFAULT_ERROR_BUFFER_BYTES,
        clock: Callable[[], float] = time.time,
    ):
        self.directory = Path(directory)
        self.redactor = redactor
        self.full = full
        self.max_file_bytes = max_file_bytes
        self.max_dir_bytes = max_dir_bytes
        self.error_files_kept = error_files_kept
        self.error_buffer_bytes = error_buffer_bytes
        self.write_errors = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._open_paths: set[Path] = set()
        self._dir_bytes_estimate: int | None = None

    def open(
        self,
        request_id: str,
        method: str,
        url: str,
        headers: Headers,
        body: bytes = b"",
        *,
        http_version: str = "HTTP/1.1",
        timestamp: float | None = None,
        max_bytes: int | None = None,
    ) -> RequestLogHandle:
        """Start the log of one request and write its request sections.

        `url` is the request target as the client sent it (path and query, or a full URL).
        `max_bytes` cuts this request's log below the writer's limits. Disk errors do not
        raise: a file that cannot be created is logged, and the handle then discards
        everything.
        """
        started = timestamp if timestamp is not None else self._clock()
        name = log_file_name(_url_path(url), request_id, started)
        if self.full:
            sink: _Sink = self._open_file_sink(name)
        elif self.error_files_kept > 0:
            sink = _MemorySink(name)
        else:
            sink = _DiscardSink(name)

        limit = self.max_file_bytes if self.full else self.error_buffer_bytes
        if max_bytes is not None:
            limit = min(limit, max_bytes)
        handle = RequestLogHandle(self, sink, max_bytes=limit, started=started)
        handle._write_request(request_id, method, url, headers, body, http_version, started)
        return handle

    def _open_file_sink(self, name: str) -> _Sink:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self.directory / name
            stem = path.stem
            for suffix in range(1, 100):
                try:
                    descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                    break
                except FileExistsError:
                    path = path.with_name(f"{stem}-{suffix}{LOG_SUFFIX}")
            else:
                raise FileExistsError(f"every candidate name for {name} exists")
        except OSError as error:
            self._note_error("create", name, error)
            return _DiscardSink(name)
        with self._lock:
            self._open_paths.add(path)
        return _FileSink(path, os.fdopen(descriptor, "wb"))

    def _note_error(self, action: str, name: str, error: OSError) -> None:
        with self._lock:
            self.write_errors += 1
            count = self.write_errors
        # The first error and every 100th are logged, so a full disk cannot flood the log.
        if count == 1 or count % 100 == 0:
            logger.error(
                "request log: %s %s in %s failed: %s (%d errors so far)",
                action,
                name,
                self.directory,
                error,
                count,
            )

    def _finish(self, sink: _Sink, failed: bool) -> None:
        """Close a sink: keep or drop its content and enforce the directory limits."""
        if isinstance(sink, _FileSink):
            size = sink.close()
            with self._lock:
                self._open_paths.discard(sink.path)
            self._account_new_file(size)
        elif isinstance(sink, _MemorySink) and failed:
            self._write_error_file(sink)

    def _write_error_file(self, sink: _MemorySink) -> None:
        name = ERROR_PREFIX + sink.name
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            descriptor = os.open(
                self.directory / name, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600
            )
            with os.fdopen(descriptor, "wb") as file:
                file.write(sink.buffer)
        except OSError as error:
            self._note_error("write", name, error)
            return
        self._prune_error_files()
        self._account_new_file(len(sink.buffer))

    def _prune_error_files(self) -> None:
        files = sorted(
            self.directory.glob(f"{ERROR_PREFIX}*{LOG_SUFFIX}"),
            key=_modified_then_name,
            reverse=True,
        )
        for path in files[self.error_files_kept :]:
            _remove(path)

    def _account_new_file(self, size: int) -> None:
        if not self.max_dir_bytes:
            return
        with self._lock:
            if self._dir_bytes_estimate is not None:
                self._dir_bytes_estimate += size
                if self._dir_bytes_estimate <= self.max_dir_bytes:
                    return
        self.enforce_directory_limit()

    def enforce_directory_limit(self) -> int:
        """Delete the oldest finished log files until the directory fits `max_dir_bytes`.

        Returns the number of files deleted.
        """
        if not self.max_dir_bytes:
            return 0
        with self._lock:
            open_paths = set(self._open_paths)
        entries = []
        for path in self.directory.glob(f"*{LOG_SUFFIX}"):
            if path.name in PROTECTED_NAMES:
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((stat.st_mtime, path.name, path, stat.st_size))
        entries.sort()

        total = sum(size for *_, size in entries)
        deleted = 0
        for _, _, path, size in entries:
            if total <= self.max_dir_bytes:
                break
            if path in open_paths:
                continue
            if _remove(path):
                total -= size
                deleted += 1
        with self._lock:
            self._dir_bytes_estimate = total
        if deleted:
            logger.info(
                "request log: deleted %d old files to stay under %d bytes",
                deleted,
                self.max_dir_bytes,
            )
        return deleted

    def error_files(self) -> list[LogFileInfo]:
        """List the `error-*.log` files, newest first."""
        infos = []
        for path in self.directory.glob(f"{ERROR_PREFIX}*{LOG_SUFFIX}"):
            try:
                stat = path.stat()
            except OSError:
                continue
            infos.append(LogFileInfo(path.name, stat.st_size, int(stat.st_mtime)))
        infos.sort(key=lambda info: (info.modified, info.name), reverse=True)
        return infos

    def find_by_request_id(self, request_id: str) -> Path | None:
        """Return the log file of a request id, or None. Rejects ids with unsafe characters."""
        if not request_id or _UNSAFE_ID_CHARACTERS.search(request_id):
            return None
        matches = sorted(self.directory.glob(f"*-{request_id}{LOG_SUFFIX}"))
        return matches[0] if matches else None


class RequestLogHandle:
    """The log of one request in progress.

    Methods do not raise on disk errors. A handle serves one flow, and a lock makes calls
    from different threads safe too.
    """

    def __init__(self, writer: RequestLogWriter, sink: _Sink, *, max_bytes: int, started: float):
        self._writer = writer
        self._sink = sink
        self._max_bytes = max_bytes
        self._started = started
        self._written = 0
        self._truncated = False
        self._attempts = 0
        self._response_body_open = False
        self._body_redactor = writer.redactor.stream()
        self._closed = False
        self._lock = threading.Lock()

    @property
    def path(self) -> Path | None:
        """Path of the log file in full mode, else None."""
        return self._sink.path if isinstance(self._sink, _FileSink) else None

    def add_attempt(
        self,
        account: str,
        status: int,
        *,
        upstream_url: str = "",
        cooldown_seconds: float | None = None,
        reason: str = "",
    ) -> None:
        """Record one upstream attempt. `status` is 0 when no HTTP response arrived."""
        with self._lock:
            self._attempts += 1
            lines = [f"Account: {account}", f"Status: {status}"]
            if upstream_url:
                lines.append(f"Upstream-URL: {self._writer.redactor.redact_url(upstream_url)}")
            if cooldown_seconds is not None:
                lines.append(f"Cooldown-Seconds: {cooldown_seconds:g}")
            if reason:
                lines.append(f"Reason: {self._writer.redactor.redact_text(reason)}")
            self._section(f"UPSTREAM ATTEMPT {self._attempts}", "\n".join(lines))

    def set_response(self, status: int, headers: Headers) -> None:
        """Write the response status and headers, then start the response body section."""
        with self._lock:
            self._flush_body_redactor()
            self._response_body_open = False
            lines = [f"Status: {status}"] + [
                f"{name}: {value}" for name, value in self._writer.redactor.redact_headers(headers)
            ]
            self._section("RESPONSE HEADERS", "\n".join(lines))

    def append_response(self, chunk: bytes) -> None:
        """Append a chunk of the response body as it arrives."""
        with self._lock:
            if self._closed:
                return
            if not self._response_body_open:
                self._write(b"=== RESPONSE BODY ===\n")
                self._response_body_open = True
            self._write(self._body_redactor.feed(chunk))

    def close(
        self, status: int | None = None, *, failed: bool | None = None, error: str = ""
    ) -> None:
        """Finish the log. `failed` defaults to `status >= 400` except 499.

        In error-only mode the request is written to an error file only if it failed.
        """
        with self._lock:
            if self._closed:
                return
            self._flush_body_redactor()
            lines = []
            if status is not None:
                lines.append(f"Status: {status}")
            duration_ms = (self._writer._clock() - self._started) * 1000
            lines.append(f"Duration-Ms: {duration_ms:.0f}")
            if error:
                lines.append(f"Error: {self._writer.redactor.redact_text(error)}")
            # END is written even after truncation, so a reader always sees the outcome.
            self._truncated = False
            self._max_bytes = self._written + 4096
            self._section("END", "\n".join(lines))
            self._closed = True
        if failed is None:
            failed = status is not None and status >= 400 and status != 499
        self._writer._finish(self._sink, failed)

    def _write_request(
        self,
        request_id: str,
        method: str,
        url: str,
        headers: Headers,
        body: bytes,
        http_version: str,
        started: float,
    ) -> None:
        redactor = self._writer.redactor
        info = [
            f"Request-Id: {request_id}",
            f"Timestamp: {datetime.fromtimestamp(started).astimezone().isoformat()}",
            f"Method: {method}",
            f"URL: {redactor.redact_url(url)}",
            f"Version: {http_version}",
        ]
        header_lines = [f"{name}: {value}" for name, value in redactor.redact_headers(headers)]
        with self._lock:
            self._section("REQUEST", "\n".join(info))
            self._section("REQUEST HEADERS", "\n".join(header_lines))
            self._write(b"=== REQUEST BODY ===\n")
            self._write(redactor.redact_body(body))
            self._write(b"\n\n")

    def _flush_body_redactor(self) -> None:
        self._write(self._body_redactor.finish())
        if self._response_body_open:
            self._write(b"\n\n")
            self._response_body_open = False

    def _section(self, title: str, text: str) -> None:
        if self._response_body_open:
            self._flush_body_redactor()
        self._write(f"=== {title} ===\n{text}\n\n".encode("utf-8", "replace"))

    def _write(self, data: bytes) -> None:
        if not data or self._truncated:
            return
        remaining = self._max_bytes - self._written
        if len(data) > remaining:
            marker = f"\n[request log truncated at {self._max_bytes} bytes]\n".encode()
            data = data[: max(0, remaining)] + marker
            self._truncated = True
        try:
            self._sink.write(data)
        except OSError as error:
            self._writer._note_error("append to", self._sink.name, error)
            self._sink = _DiscardSink(self._sink.name)
            return
        self._written += len(data)


class _Sink:
    name: str
    path: Path | None = None

    def write(self, data: bytes) -> None:
        raise NotImplementedError


class _DiscardSink(_Sink):
    def __init__(self, name: str):
        self.name = name

    def write(self, data: bytes) -> None:
        pass


class _MemorySink(_Sink):
    def __init__(self, name: str):
        self.name = name
        self.buffer = bytearray()

    def write(self, data: bytes) -> None:
        self.buffer += data


class _FileSink(_Sink):
    def __init__(self, path: Path, file):
        self.name = path.name
        self.path = path
        self._file = file

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def close(self) -> int:
        try:
            self._file.close()
            return self.path.stat().st_size
        except OSError as error:
            logger.error("request log: closing %s failed: %s", self.path, error)
            return 0


def _url_path(url: str) -> str:
    if "://" in url:
        url = url.split("://", 1)[1]
        url = "/" + url.partition("/")[2]
    return url.partition("?")[0]


def _modified_then_name(path: Path) -> tuple[float, str]:
    try:
        return path.stat().st_mtime, path.name
    except OSError:
        return 0.0, path.name


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as error:
        logger.error("request log: deleting %s failed: %s", path, error)
        return False
    return True
