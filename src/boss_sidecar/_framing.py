"""``Connection.send_bytes`` framing on a raw file descriptor, for the RPC endpoint.

Kept apart from ``rpc`` because it is only bytes: splitting the stream into messages (with
distinct errors for a stream that ends between messages or inside one, and a bad length) and
framing messages to send. It knows nothing of pickles, requests or the endpoint.
"""

from __future__ import annotations

import os
import struct
from typing import Any, NamedTuple

from boss_sidecar.errors import ProtocolError

_HEADER = struct.Struct("!i")  # Connection's framing: a signed 4-byte length ...
_LONG_HEADER = struct.Struct("!iQ")  # ... or -1 and an 8-byte length for messages of 2 GiB and more
_LONG = 0x7FFFFFFF
_READ_BUFFER = 256 * 1024  # one read takes up to this much: every message that has arrived
_KEPT_OF_OVERSIZED = 4096  # of a message over the limit, the start is kept to find its id


class _Oversized(NamedTuple):
    """A message over the limit that was read past: its size and its first bytes."""

    size: int
    start: bytes


class _ChannelEnded(Exception):
    """The byte stream ended; the text says whether between messages or inside one."""


class _FrameReader:
    """Splits the connection's byte stream into messages, as ``Connection.recv_bytes`` would.

    ``batch`` blocks for one read and returns every whole message it completed. Messages are
    memoryviews into a reused buffer, valid until the next ``batch``; a message bigger than the
    buffer gets a buffer of its own, and one over ``limit`` is read past, only its start kept.
    """

    def __init__(self, fd: int, limit: int) -> None:
        self._fd = fd
        self._limit = limit
        self._buffer = bytearray(_READ_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0

    def batch(self) -> list[memoryview | bytes | bytearray | _Oversized]:
        self._compact()
        self._fill(self._end, "")
        frames: list[memoryview | bytes | bytearray | _Oversized] = []
        while self._end - self._start >= _HEADER.size:
            size = _HEADER.unpack_from(self._buffer, self._start)[0]
            header = _HEADER.size
            if size == -1:
                if self._end - self._start < _LONG_HEADER.size:
                    break
                size = _LONG_HEADER.unpack_from(self._buffer, self._start)[1]
                header = _LONG_HEADER.size
            elif size < 0:
                raise ProtocolError(f"bad message length {size}: the byte stream is corrupt")
            body = self._start + header
            if self._end - body >= size and size <= self._limit:
                frames.append(self._view[body : body + size])
                self._start = body + size
                continue
            if size <= self._limit and header + size <= len(self._buffer):
                break  # the rest of this message comes with a later read
            # The buffer is about to be reused: earlier messages of this batch must not change.
            frames[:] = [bytes(frame) if isinstance(frame, memoryview) else frame for frame in frames]
            frames.append(self._read_past(body, size) if size > self._limit else self._read_large(body, size))
        return frames

    def _compact(self) -> None:
        """Move a partly read message to the front so the next read has room for the rest."""
        left = self._end - self._start
        if left and self._start:
            self._buffer[:left] = bytes(self._view[self._start : self._end])
        self._start, self._end = 0, left

    def _fill(self, at: int, inside: str) -> int:
        """One blocking read into the buffer at ``at``; raise _ChannelEnded on end of stream."""
        got = os.readv(self._fd, [self._view[at:]])
        if not got:
            if inside or self._end > self._start:
                raise _ChannelEnded(f"channel closed in the middle of a message{inside}")
            raise _ChannelEnded("peer closed the channel")
        self._end = at + got
        return got

    def _read_large(self, body: int, size: int) -> bytearray:
        message = bytearray(size)
        view = memoryview(message)
        have = self._end - body
        view[:have] = self._view[body : self._end]
        self._start = self._end = 0
        while have < size:
            got = os.readv(self._fd, [view[have:]])
            if not got:
                raise _ChannelEnded(f"channel closed in the middle of a message of {size} bytes")
            have += got
        return message

    def _read_past(self, body: int, size: int) -> _Oversized:
        kept = bytearray()
        left = size
        position = body
        while True:
            take = min(self._end - position, left)
            if len(kept) < _KEPT_OF_OVERSIZED:
                kept += self._view[position : position + min(take, _KEPT_OF_OVERSIZED - len(kept))]
            left -= take
            position += take
            if not left:
                self._start = position
                return _Oversized(size, bytes(kept))
            self._start = self._end = position = 0
            self._fill(0, f" of {size} bytes")


def _header(size: int) -> bytes:
    """Connection's header for a message of ``size`` bytes."""
    return _HEADER.pack(size) if size <= _LONG else _LONG_HEADER.pack(-1, size)


def _after(parts: list[Any], sent: int) -> list[Any]:
    """What is left of ``parts`` once their first ``sent`` bytes went out."""
    for index, part in enumerate(parts):
        size = len(part)
        if sent < size:
            rest = parts[index:]
            if sent:
                rest[0] = memoryview(part)[sent:]
            return rest
        sent -= size
    return []
