"""The RPC endpoint's writer: the outbox every message goes through, backpressure, batched writes.

Kept apart from ``rpc``: it knows frames and a descriptor, not what the messages mean. Senders hand
their frames to whichever thread is writing instead of queueing on a lock, so a busy channel costs a
few system calls per batch rather than several per message. Writes never block a sender: what the
socket does not take at once is written by a short-lived writer thread, bounded by the send timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, Protocol

from boss_sidecar._framing import _after, _header
from boss_sidecar._interrupts import MAIN
from boss_sidecar.errors import CallTimeout, SidecarCrashed, SidecarError

_PARTS_PER_WRITE = 512  # buffers per sendmsg/writev call (IOV_MAX is 1024 on Linux)
_SEND_FLAGS = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)
_CORK_PARTS = 32  # a loop's corked requests are written once this many frame parts wait (16 messages)
_HOLD_BYTES = 256 * 1024  # replies held for one write at most (see hold)


class _Holder(Protocol):
    """What holds replies back for one write: a batch of calls a reader runs (see _server_reading)."""

    owner: int  # the thread ident whose replies are held
    held: list[Any]  # frame parts of the replies held
    size: int  # their bytes


class _Handoff:
    """The writing, handed to a writer thread not yet running (see _Writer._hand_to_writer_thread)."""

    __slots__ = ("claimed", "spawner")

    def __init__(self) -> None:
        self.spawner = threading.get_ident()
        self.claimed = False


class _Writer:
    """The outbox of one channel and the one thread at a time that writes it.

    ``is_reader()`` tells whether the current thread reads the channel: it is never throttled (two
    readers waiting on each other would deadlock). ``broken(problem)`` runs once a write failed.

    Interrupts: a signal handler (Ctrl-C) may raise in the main thread at any call's return, even one that
    wrote. So the writing thread is recorded, what it writes is kept in ``_in_flight`` and each write's count
    lands in ``_sent`` from C (no such point in between); ``rescue`` then finishes the write from the exact
    byte reached, and the framing holds."""

    def __init__(
        self,
        fd: int,
        sock: socket.socket | None,
        name: str,
        *,
        send_timeout: float,
        max_backlog: int,
        is_reader: Callable[[], bool],
        broken: Callable[[SidecarCrashed], None],
    ) -> None:
        self._fd = fd
        self._socket = sock
        self._name = name
        self._send_timeout = send_timeout
        self._max_backlog = max_backlog
        self._is_reader = is_reader
        self._broken = broken
        self._closed: SidecarError | None = None
        self._outbox: list[Any] = []  # frames (header, bytes, ...) not yet handed to the socket
        self._lock = threading.Lock()
        self._writing: object = None  # who writes the outbox (a thread ident, or a _Handoff); others only add to it
        self._in_flight: list[Any] = []  # the parts the writer is writing (see rescue)
        self._sent: list[int] = []  # the count of a write not yet applied to _in_flight (see _write)
        self._backlog = 0  # bytes in the outbox: past max_backlog, senders wait (see send)
        self._drained = threading.Condition(self._lock)
        self._throttled = 0  # senders waiting on _drained
        self._corked: set[asyncio.AbstractEventLoop] = set()  # loops in a turn that woke callers (see send)
        self.holding: dict[int, _Holder] = {}  # threads running a batch of calls, by ident (see hold)
        self._bound_send_timeout()

    def close(self, error: SidecarError) -> None:
        """Drop what is queued and refuse what comes; wake throttled senders."""
        with self._lock:
            self._closed = error
            self._outbox = []
            self._backlog = 0
            self._drained.notify_all()

    def _raise_if_closed(self) -> None:
        if self._closed is not None:
            raise type(self._closed)(str(self._closed))

    def _bound_send_timeout(self) -> None:
        """Bound a blocked write (peer stopped reading) so the writer thread cannot wait forever."""
        with contextlib.suppress(OSError, ValueError):
            if self._socket is not None:
                self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self._send_timeout))

    def send(self, body: list[bytes], size: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Queue one message (its pickle in parts, ``size`` bytes in all) and write the queue unless
        another thread is writing it already.

        On an event loop (``loop``) in a turn that woke callers, the write waits for the end of the
        turn: the requests the woken tasks make go out with one system call. A thread that sends
        meanwhile writes them along with its own, so a busy loop never holds up other senders."""
        try:
            header = _header(size)
            with self._lock:
                self._raise_if_closed()
                if self._backlog > self._max_backlog and not self._is_reader():
                    # Backpressure: a peer that reads slower than we send must not grow our memory
                    # without bound. Never on the reader thread: two readers waiting would deadlock.
                    self._throttled += 1
                    try:
                        drained = self._drained.wait_for(
                            lambda: self._backlog <= self._max_backlog or self._closed is not None, self._send_timeout
                        )
                    finally:
                        self._throttled -= 1
                    if not drained:
                        raise CallTimeout(f"{self._name}: peer not reading: {self._backlog} bytes still queued")
                    self._raise_if_closed()
                self._backlog += len(header) + size
                if self._writing is not None or self._outbox or loop in self._corked:
                    self._outbox.append(header)
                    self._outbox += body
                    if self._writing is not None or (loop in self._corked and len(self._outbox) < _CORK_PARTS):
                        return
                    parts = None
                else:
                    parts = self._in_flight = [header, *body]  # nothing queued: write it directly
                self._writing = threading.get_ident()
            self._write_outbox(block=False, parts=parts)
        except BaseException:
            self.rescue()  # an interrupt (Ctrl-C) may have cut this thread's write short
            raise

    # ----------------------------------------------------------------- replies held for one write
    def start_holding(self, holder: _Holder) -> None:
        """Hold the replies the current thread sends (see hold) until ``release(holder)``."""
        with self._lock:
            self.holding[holder.owner] = holder

    def held_here(self) -> _Holder | None:
        """What holds the current thread's replies, if anything does (a dict read: no lock)."""
        return self.holding.get(threading.get_ident()) if self.holding else None

    def hold(self, holder: _Holder, body: list[bytes], size: int) -> bool:
        """Keep a reply, to go out with the holder's others in one write; False if the holder holds no more
        (released). Past _HOLD_BYTES they all go at once."""
        header = _header(size)
        with self._lock:
            if self.holding.get(holder.owner) is not holder:
                return False
            self._raise_if_closed()
            holder.held.append(header)
            holder.held += body
            holder.size += len(header) + size
            full = holder.size >= _HOLD_BYTES
        if full:
            self.release(holder)
        return True

    def release(self, holder: _Holder) -> None:
        """Send the replies ``holder`` holds and hold no more; once (whoever comes first)."""
        with self._lock:
            if self.holding.get(holder.owner) is not holder:
                return
            del self.holding[holder.owner]
            held, holder.held = holder.held, []
            if not held or self._closed is not None:
                return
            self._backlog += holder.size
            self._outbox += held
        self.flush()

    # ----------------------------------------------------------------- corking a loop's turn
    def cork(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hold ``loop``'s requests until ``uncork`` (the end of the turn that woke its callers)."""
        self._corked.add(loop)

    def is_corked(self, loop: asyncio.AbstractEventLoop) -> bool:
        return loop in self._corked

    def uncork(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._corked.discard(loop)
        self.flush()

    # ----------------------------------------------------------------- writing
    def flush(self) -> None:
        """Write what is queued, unless another thread is writing it already."""
        try:
            with self._lock:
                if self._writing is not None or not self._outbox:
                    return
                self._writing = threading.get_ident()
            self._write_outbox(block=False)
        except SidecarCrashed:  # the channel broke: closing failed every pending request
            pass
        except BaseException:
            self.rescue()  # an interrupt (Ctrl-C) may have cut this thread's write short
            raise

    def _write_outbox(self, *, block: bool, parts: list[Any] | None = None) -> None:
        """Write ``parts`` (if given) then until the outbox is empty; the caller set ``_writing``.

        Without ``block``, what the socket will not take at once goes to a writer thread (which
        blocks, bounded by the send timeout) so no caller waits here."""
        if parts is None:
            with self._lock:
                parts = self._in_flight = self._outbox
                self._outbox = []
                if not parts or self._closed is not None:
                    self._writing = None
                    return
        while True:
            try:
                rest = self._write(parts, block=block)
                with self._lock:
                    self._backlog -= sum(map(len, parts)) - sum(map(len, rest))
                    if self._throttled:
                        self._drained.notify_all()
                    if not rest:  # take what was queued meanwhile, under the same lock
                        parts = self._in_flight = self._outbox
                        self._outbox = []
                        if not parts or self._closed is not None:
                            self._writing = None
                            return
            except OSError as exc:
                problem = SidecarCrashed(f"{self._name}: channel broken while sending: {exc}")
                with self._lock:
                    self._writing, self._in_flight = None, []
                self._broken(problem)
                if block:
                    return
                raise problem from exc
            if rest:
                with self._lock:
                    self._outbox[:0] = rest
                    self._in_flight = []
                    handoff = self._writing = _Handoff()
                self._hand_to_writer_thread(handoff)
                return

    def _hand_to_writer_thread(self, handoff: _Handoff) -> None:
        threading.Thread(target=self._write_handed, args=(handoff,), name=f"{self._name}-writer", daemon=True).start()

    def _write_handed(self, handoff: _Handoff) -> None:
        """On a writer thread: write the outbox, blocked (bounded by the send timeout), unless the writing went
        to another writer thread meanwhile (see rescue)."""
        with self._lock:
            if self._writing is not handoff:
                return
            handoff.claimed = True
        self._write_outbox(block=True)

    def rescue(self) -> None:
        """After an interrupt on this thread: if it was writing (or handing the writing to a writer thread not yet
        running), put back at the front of the outbox what it had not written, from the exact byte it reached,
        for a new writer thread to write. Only on that way out: the common path pays nothing for it."""
        me = threading.get_ident()
        with self._lock:
            writing = self._writing
            if not (writing == me or (isinstance(writing, _Handoff) and writing.spawner == me and not writing.claimed)):
                return
            rest, sent = self._in_flight, self._sent
            if sent:
                rest = _after(rest, sent[0])
                sent.clear()
            self._in_flight = []
            self._outbox[:0] = rest
            self._backlog = sum(map(len, self._outbox))  # only this thread wrote: the outbox is all there is
            if not self._outbox or self._closed is not None:
                self._writing = None
                return
            handoff = self._writing = _Handoff()
        self._hand_to_writer_thread(handoff)

    def _write(self, parts: list[Any], *, block: bool) -> list[Any]:
        """Write ``parts`` in order; return what is left when the socket would block (never with ``block``).

        A partial write is followed by the rest, so framing holds; a failed write (including the send
        timeout running out) raises OSError, and the channel is dead either way."""
        sock, sent = self._socket, self._sent
        on_main = threading.get_ident() == MAIN[0]  # elsewhere no signal handler runs (see _interrupts)
        while parts:
            chunk = parts[:_PARTS_PER_WRITE]
            self._in_flight = parts
            try:
                if on_main:  # the count goes into ``sent`` from C: an interrupt on this call's return cannot lose it
                    if sock is None:
                        sent.extend(map(os.writev, (self._fd,), (chunk,)))
                    else:
                        sent.extend(map(sock.sendmsg, (chunk,), ((),), (0 if block else _SEND_FLAGS,)))
                elif sock is None:
                    sent.append(os.writev(self._fd, chunk))
                else:
                    sent.append(sock.sendmsg(chunk, (), 0 if block else _SEND_FLAGS))
            except BlockingIOError:
                if block:
                    raise
                return parts
            parts = _after(parts, sent[0])
            self._in_flight = parts  # with the next line: no point in between where a signal handler runs
            del sent[0]
        return parts


def _timeval(seconds: float) -> bytes:
    """A socket timeout option's value (0 means none, so a positive time is at least a microsecond)."""
    whole = int(seconds)
    micros = int((seconds - whole) * 1_000_000)
    return struct.pack("@ll", whole, micros if whole or micros or not seconds else 1)
