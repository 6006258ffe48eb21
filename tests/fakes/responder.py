"""Writer of fake upstream responses: applies the scripted plan while it sends a reply.

It applies delays, gzip, truncation (`DropAfter`), in-band stream errors, omitted frames
and UTF-8 split writes. It also records the response status, the time each stream frame
was written and drained, and whether the client hung up first.
"""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib

from tests.fakes.behaviors import Plan
from tests.fakes.core import ID_PLACEHOLDER, JsonReply, Reply, StreamReply
from tests.fakes.errors import inband_error_frame
from tests.fakes.http11 import build_head
from tests.fakes.recording import RecordedRequest

SPLIT_PAUSE = 0.005
"""Seconds between the two writes of a split frame, so that they reach the peer as two reads."""

_POLL_INTERVAL = 0.02
"""Seconds between hang-up checks while a delay runs."""


def _client_gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Return True when the peer closed or reset the connection.

    An HTTP client that does not pipeline sends nothing while it waits for the response,
    so EOF on the read side means it hung up.
    """
    return reader.at_eof() or reader.exception() is not None or writer.transport.is_closing()


async def _pause(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float) -> bool:
    """Sleep `seconds`; return False as soon as the client hangs up."""
    deadline = time.monotonic() + seconds
    while True:
        if _client_gone(reader, writer):
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        await asyncio.sleep(min(remaining, _POLL_INTERVAL))


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _utf8_cut(frame: bytes) -> int | None:
    """Return an offset just after the lead byte of the first multi-byte character, or None."""
    for index, byte in enumerate(frame):
        if byte >= 0xC0:
            return index + 1
    return None


class ReplyWriter:
    """Sends one reply on a connection. Returns from `send` whether the connection stays usable."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: RecordedRequest,
        plan: Plan,
        rid: bytes,
        model: str | None,
        keep_alive: bool,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.record = record
        self.plan = plan
        self.rid = rid
        self.model = model
        self.keep_alive = keep_alive

    async def send(self, reply: Reply) -> bool:
        try:
            if self.plan.header_delay > 0 and not await _pause(self.reader, self.writer, self.plan.header_delay):
                return self._hung_up()
            if isinstance(reply, JsonReply):
                return await self._send_json(reply)
            return await self._send_stream(reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            return self._hung_up()

    def _hung_up(self) -> bool:
        self.record.client_disconnected = True
        return False

    def _connection_headers(self) -> list[tuple[str, str]]:
        return [] if self.keep_alive else [("Connection", "close")]

    async def _send_json(self, reply: JsonReply) -> bool:
        body = reply.body.replace(ID_PLACEHOLDER, self.rid)
        headers = [("Content-Type", reply.content_type)] if reply.content_type else []
        headers.extend(reply.headers)
        if self.plan.gzip:
            body = gzip.compress(body, mtime=0)
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        headers.extend(self._connection_headers())
        head = build_head(reply.status, headers)
        self.record.status = reply.status

        writer = self.writer
        if self.plan.drop_after is not None:
            writer.write(head + body[: len(body) // 2])
            await writer.drain()
            writer.close()
            return False
        if self.plan.event_delay > 0:
            writer.write(head)
            await writer.drain()
            if not await _pause(self.reader, writer, self.plan.event_delay):
                return self._hung_up()
            writer.write(body)
        else:
            writer.write(head + body)
        await writer.drain()
        return self.keep_alive

    async def _send_stream(self, reply: StreamReply) -> bool:
        plan = self.plan
        headers = [("Content-Type", reply.content_type), ("Cache-Control", "no-cache")]
        headers.extend(reply.headers)
        if plan.gzip:
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Transfer-Encoding", "chunked"))
        headers.extend(self._connection_headers())
        self.writer.write(build_head(reply.status, headers))
        self.record.status = reply.status
        await self.writer.drain()

        compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if plan.gzip else None
        stream_error = plan.stream_error
        written = 0
        for name, frame in reply.frames:
            if name in plan.omit:
                continue
            if stream_error is not None and written == stream_error.after:
                break
            if plan.drop_after is not None and written >= plan.drop_after:
                self.writer.close()
                return False
            if written > 0 and plan.event_delay > 0 and not await _pause(self.reader, self.writer, plan.event_delay):
                return self._hung_up()
            await self._write_frame(frame.replace(ID_PLACEHOLDER, self.rid), compressor)
            written += 1

        if stream_error is not None:
            frame = inband_error_frame(reply.stream_kind, stream_error.error, self.model, written, reply.eol)
            await self._write_frame(frame.replace(ID_PLACEHOLDER, self.rid), compressor)
        if compressor is not None:
            self.writer.write(_chunk(compressor.flush()))
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()
        return self.keep_alive

    async def _write_frame(self, frame: bytes, compressor: zlib._Compress | None) -> None:
        """Write one frame as one chunk (two under SplitUtf8), drain, and record the time."""
        cut = _utf8_cut(frame) if self.plan.split_utf8 else None
        parts = [frame] if cut is None else [frame[:cut], frame[cut:]]
        for position, part in enumerate(parts):
            if position > 0:
                await asyncio.sleep(SPLIT_PAUSE)
            if compressor is not None:
                part = compressor.compress(part) + compressor.flush(zlib.Z_SYNC_FLUSH)
            self.writer.write(_chunk(part))
            await self.writer.drain()
        self.record.event_times.append(time.monotonic())
