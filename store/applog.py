"""Application log for `GET /v0/management/logs`: a logging handler with a bounded ring.

Each line reads `[YYYY-MM-DD HH:MM:SS] [level] [logger] message` in local time. Lines of a
multi-line message or traceback share the timestamp of their record. Every line is
redacted before it is stored. When a log directory is set (`logging-to-file: true`), lines
are also appended to `main.log`, which rotates to `main.log.1`, `main.log.2`, ... at
`max_file_bytes`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO

from store.redact import Redactor

DEFAULT_MAX_LINES = 10_000
DEFAULT_MAX_FILE_BYTES = 10 << 20
DEFAULT_BACKUP_COUNT = 5
LOG_FILE_NAME = "main.log"


class AppLogHandler(logging.Handler):
    """Logging handler that keeps the newest `max_lines` lines in memory and optionally a file.

    NOTE: timestamps have whole-second resolution, as in CLIProxyAPI, so a poller that
    passes the last `latest-timestamp` as `after` misses lines logged later within that
    same second.
    """

    def __init__(
        self,
        redactor: Redactor,
        *,
        max_lines: int = DEFAULT_MAX_LINES,
        directory: str | Path | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        backup_count: int = DEFAULT_BACKUP_COUNT,
        level: int = logging.NOTSET,
    ):
        super().__init__(level)
        self.redactor = redactor
        self.max_file_bytes = max_file_bytes
        self.backup_count = backup_count
        self._lines: deque[tuple[int, str]] = deque(maxlen=max_lines)
        self._directory: Path | None = None
        self._file: BinaryIO | None = None
        self._file_size = 0
        self.set_directory(directory)

    @property
    def directory(self) -> Path | None:
        return self._directory

    def set_directory(self, directory: str | Path | None) -> None:
        """Start writing `main.log` in `directory`, or stop writing files when None."""
        with self.lock:
            self._close_file()
            self._directory = Path(directory) if directory is not None else None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            created = int(record.created)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
            text = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                text = f"{text}\n{record.exc_text}"
            if record.stack_info:
                text = f"{text}\n{record.stack_info}"
            text = self.redactor.redact_text(text)

            first, *rest = text.split("\n")
            lines = [f"[{stamp}] [{record.levelname.lower()}] [{record.name}] {first}", *rest]
            for line in lines:
                self._lines.append((created, line))
            if self._directory is not None:
                self._write_file("".join(line + "\n" for line in lines))
        except Exception:
            self.handleError(record)

    def lines_after(self, after: int | None = None, limit: int | None = None) -> dict[str, Any]:
        """Return the kept lines strictly newer than `after` (epoch seconds), oldest first.

        `after` of None or 0 returns every kept line. A positive `limit` returns only the
        newest `limit` of them, and None or 0 sets no limit. `line-count` is the number of
        lines returned. `latest-timestamp` is the newest timestamp among the lines newer
        than `after`, else `after` itself (0 when None).
        """
        with self.lock:
            entries = [entry for entry in self._lines if after is None or entry[0] > after]
        latest = max((created for created, _ in entries), default=after or 0)
        if limit is not None and limit > 0:
            entries = entries[-limit:]
        lines = [line for _, line in entries]
        return {"lines": lines, "line-count": len(lines), "latest-timestamp": latest}

    def clear(self) -> int:
        """Drop the kept lines, truncate `main.log` and delete its rotated files.

        Returns the number of lines dropped from memory.
        """
        with self.lock:
            removed = len(self._lines)
            self._lines.clear()
            self._close_file()
            if self._directory is not None:
                for path in self._rotated_paths():
                    path.unlink(missing_ok=True)
                main_log = self._directory / LOG_FILE_NAME
                if main_log.exists():
                    os.truncate(main_log, 0)
        return removed

    def close(self) -> None:
        with self.lock:
            self._close_file()
        super().close()

    def _write_file(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        if self._file is not None and self._file_size + len(data) > self.max_file_bytes:
            self._rotate()
        if self._file is None:
            self._open_file()
        assert self._file is not None
        self._file.write(data)
        self._file.flush()
        self._file_size += len(data)

    def _open_file(self) -> None:
        assert self._directory is not None
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._directory / LOG_FILE_NAME
        descriptor = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
        self._file = os.fdopen(descriptor, "ab")
        self._file_size = os.fstat(descriptor).st_size

    def _rotate(self) -> None:
        assert self._directory is not None
        self._close_file()
        if self.backup_count <= 0:
            os.truncate(self._directory / LOG_FILE_NAME, 0)
            return
        for index in range(self.backup_count - 1, 0, -1):
            source = self._directory / f"{LOG_FILE_NAME}.{index}"
            if source.exists():
                os.replace(source, self._directory / f"{LOG_FILE_NAME}.{index + 1}")
        os.replace(self._directory / LOG_FILE_NAME, self._directory / f"{LOG_FILE_NAME}.1")

    def _rotated_paths(self) -> list[Path]:
        assert self._directory is not None
        return sorted(self._directory.glob(f"{LOG_FILE_NAME}.*"))

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._file_size = 0
