"""``Connection.send_bytes`` framing on a raw file descriptor, for the RPC endpoint.

Kept apart from ``rpc`` because it is only bytes: splitting the stream into messages (with
distinct errors for a stream that ends between messages or inside one, and a bad length) and
framing messages to send. It knows nothing of pickles, requests or the endpoint.
"""

from __future__ import annotations

import mmap
import os
import struct
from threading import get_ident
from typing import Any, NamedTuple

from boss_sidecar._interrupts import MAIN
from boss_sidecar.errors import ProtocolError

_HEADER = struct.Struct("!i")  # Connection's framing: a signed 4-byte length ...
_LONG_HEADER = struct.Struct("!iQ")  # ... or -1 and an 8-byte length for messages of 2 GiB and more
_LONG = 0x7FFFFFFF
_READ_BUFFER = 1024 * 1024  # one read takes up to this much: every message that has arrived
_KEPT_OF_OVERSIZED = 4096  # of a message over the limit, the start is kept to find its id


class _Oversized(NamedTuple):
    """A message over the limit that was read past: its size and its first bytes."""

    size: int
    start: bytes


class _ChannelEnded(Exception):
    """The byte stream ended; the text says whether between messages or inside one."""


class _FrameReader:
    """Splits the connection's byte stream into messages, as ``Connection.recv_bytes`` would.

    ``batch`` makes exactly one read (blocking only if nothing has arrived) and returns every
    whole message it completed, so a reader that first waits for the descriptor to be readable
    never blocks past its deadline. Messages are memoryviews into a reused buffer, valid until
    the next ``batch``; a message bigger than the buffer is gathered, read by read, in a buffer
    of its own, and one over ``limit`` is read past, only its start kept. Reads go on where the
    last one ended until a message would not fit, so a stream of large messages is seldom copied
    within the buffer (that copy took a third of the host's time delivering 64 KiB samples).
    """

    def __init__(self, fd: int, limit: int) -> None:
        self._fd = fd
        self._limit = limit
        # Anonymous memory, not a bytearray: a bytearray is zeroed at once, so each endpoint would own
        # all of it from the start; here only the pages reads have reached belong to the process.
        self._buffer = mmap.mmap(-1, _READ_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0
        self._large: bytearray | None = None  # a message bigger than the buffer, being gathered
        self._have = 0  # its bytes read so far
        self._skipping: _Skipping | None = None  # a message over the limit, being read past
        self._got: list[int] = []  # the count of a read not yet applied (see _fill)
        self._got_at = 0  # where that read went

    def batch(self) -> list[memoryview | bytes | bytearray | _Oversized]:
        frames: list[memoryview | bytes | bytearray | _Oversized] = []
        if self._got:  # an interrupt came as the last read returned: its bytes are here, not yet counted
            self._apply_fill()
        elif self._large is not None or self._skipping is not None:
            finished = self._gather() if self._large is not None else self._skip()
            if finished is None:
                return frames
            frames.append(finished)
        else:
            self._compact()
            self._fill(self._end, "")
        self._split(frames)
        return frames

    def _split(self, frames: list[memoryview | bytes | bytearray | _Oversized]) -> None:
        """Add the whole messages in the buffer to ``frames``; start gathering or skipping a big one."""
        while (found := self._header_at_start()) is not None:
            size, header = found
            body = self._start + header
            here = self._end - body
            if here >= size and size <= self._limit:
                frames.append(self._view[body : body + size])
                self._start = body + size
                continue
            if size <= self._limit and header + size <= len(self._buffer):
                break  # the rest of this message comes with a later read
            if size <= self._limit:
                self._large = bytearray(size)
                self._large[:here] = self._view[body : self._end]
                self._have = here
            else:
                taken = min(here, size)
                skipping = _Skipping(
                    size, size - taken, bytearray(self._view[body : body + min(taken, _KEPT_OF_OVERSIZED)])
                )
                if not skipping.left:
                    frames.append(_Oversized(size, bytes(skipping.kept)))
                    self._start = body + size
                    continue
                self._skipping = skipping
            # The buffer is reused from the next batch on; this batch's messages stay valid until then.
            self._start = self._end = 0
            return

    def _compact(self) -> None:
        """Make room for the rest of a partly read message: move it to the front only if it would not
        fit where it is (a copy, so as seldom as can be); with nothing left over, start at the front."""
        left = self._end - self._start
        if not left:
            self._start = self._end = 0
        elif self._start and not self._fits_in_place():
            # Through a temporary, not in place nor into a second buffer: freeing it (over glibc's mmap
            # threshold) raises malloc's trim threshold, so the heap stops shrinking after each batch
            # of large samples and faulting them back in. Without it the host's CPU per 64 KiB sample
            # went up by a third or more, with page faults.
            self._buffer[:left] = bytes(self._view[self._start : self._end])
            self._start, self._end = 0, left

    def _fits_in_place(self) -> bool:
        """Whether the partly read message at ``_start`` ends inside the buffer (its header read whole)."""
        found = self._header_at_start()
        return found is not None and self._start + found[1] + found[0] <= len(self._buffer)

    def _header_at_start(self) -> tuple[int, int] | None:
        """The size of the message at ``_start`` and of its header; None until the header is read whole."""
        left = self._end - self._start
        if left < _HEADER.size:
            return None
        size: int = _HEADER.unpack_from(self._buffer, self._start)[0]
        if size >= 0:
            return size, _HEADER.size
        if size != -1:
            raise ProtocolError(f"bad message length {size}: the byte stream is corrupt")
        if left < _LONG_HEADER.size:
            return None
        return _LONG_HEADER.unpack_from(self._buffer, self._start)[1], _LONG_HEADER.size

    def _fill(self, at: int, inside: str) -> int:
        """One read into the buffer at ``at``; raise _ChannelEnded on end of stream.

        A signal handler (Ctrl-C) may raise in the main thread as the read returns, which would lose its
        count and with it the framing: there the count goes into ``_got`` from C (no such point in between)
        and is applied at once or, cut short, by the next batch. Elsewhere no handler runs (see _interrupts):
        the plain read costs some 0.5 microseconds less."""
        if get_ident() == MAIN[0]:
            got = self._got
            self._got_at = at
            got.extend(map(os.readv, (self._fd,), ([self._view[at:]],)))
            count = got[0]
            if count:
                self._end = at + count
            del got[0]  # with the lines above: no point in between where a signal handler runs
        else:
            count = os.readv(self._fd, [self._view[at:]])
            if count:
                self._end = at + count
        if not count:
            raise self._ended(inside)
        return count

    def _apply_fill(self) -> None:
        """Apply the count of a read an interrupt cut short (see _fill)."""
        got = self._got
        count = got[0]
        if count:
            self._end = self._got_at + count
        del got[0]  # with the lines above: no point in between where a signal handler runs
        if not count:
            raise self._ended("")

    def _ended(self, inside: str) -> _ChannelEnded:
        if inside or self._end > self._start:
            return _ChannelEnded(f"channel closed in the middle of a message{inside}")
        return _ChannelEnded("peer closed the channel")

    def _gather(self) -> bytearray | None:
        """One read towards the large message (what follows it lands in the buffer); it, once whole."""
        message = self._large
        assert message is not None
        got = os.readv(self._fd, [memoryview(message)[self._have :], self._view])
        if not got:
            raise _ChannelEnded(f"channel closed in the middle of a message of {len(message)} bytes")
        self._have += got
        if self._have < len(message):
            return None
        self._start, self._end = 0, self._have - len(message)
        self._large = None
        return message

    def _skip(self) -> _Oversized | None:
        """One read past the oversized message; its size and start once read past."""
        skipping = self._skipping
        assert skipping is not None
        got = os.readv(self._fd, [self._view])
        if not got:
            raise _ChannelEnded(f"channel closed in the middle of a message of {skipping.size} bytes")
        self._end = got
        taken = min(got, skipping.left)
        if len(skipping.kept) < _KEPT_OF_OVERSIZED:
            skipping.kept += self._view[: min(taken, _KEPT_OF_OVERSIZED - len(skipping.kept))]
        skipping.left -= taken
        if skipping.left:
            self._end = 0
            return None
        self._start = taken
        self._skipping = None
        return _Oversized(skipping.size, bytes(skipping.kept))


class _Skipping:
    """A message over the limit being read past: its size, the bytes still to come, its start."""

    __slots__ = ("kept", "left", "size")

    def __init__(self, size: int, left: int, kept: bytearray) -> None:
        self.size = size
        self.left = left
        self.kept = kept


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
