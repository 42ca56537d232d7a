"""The symmetric RPC endpoint: serves an object to the peer and calls the peer's object.

One thread at a time holds the reading role and routes each message read (event-driven, no
polling): replies settle the waiting caller by id, heartbeats are answered at once, one-way events
and attribute access run in arrival order, and calls run in a thread pool so a slow method never
holds up other requests or heartbeats. Who reads depends on the side, since every hand-off from
one thread to another costs a wake-up:

- the calling side (``callers_read``, the host): the role is free between messages. A sync caller
  waiting for its reply reads the channel itself, so the reply wakes no other thread; so does the
  lone async caller, on its loop thread, for as long as it busy-waits (below); whatever arrives
  while no caller reads wakes a standby thread (epoll) that reads it.
- the serving side (the worker): a reader (leader/follower, on a pool thread) runs each call it
  reads itself, so a served call starts without waiting for another thread to wake. Meanwhile the
  standby watches the channel (armed once) and starts another reader only if a message arrives
  before the call returns; on a busy channel the reading passes to a pool thread at once instead.
  Calls read together run one after another on the reader, their replies sent in one write, with
  a pool thread watching: past a millisecond it sends what is done and starts the rest in the pool.

Sync and async callers share one core: a request is a ``_Pending`` registered by id; ``call``
blocks on it (or reads for it), ``acall`` awaits it.

The bytes on the wire are exactly ``Connection.send_bytes`` framing (a ``!i`` length, or -1 and a
``!Q`` length, then the pickle), so a BOSS peer using ``Connection.send``/``recv`` reads them. The
endpoint does its own framing on the connection's file descriptor for speed: the reader takes
every message that has arrived with one system call, and senders hand their frames to whichever
thread is writing instead of queueing on a lock, so a busy channel costs a few system calls per
batch rather than several per message. Writes never block a caller: what the socket does not
take at once is written by a short-lived writer thread, bounded by the send timeout.

A reader about to sleep waiting for the peer's next message first polls for it for ``busy_wait``
seconds (100 microseconds by default) when it waits alone: the lone sync caller, the lone async
caller on its loop thread, the worker's reader after a request that came by itself. On virtual
machines a sleeping thread wakes tens of microseconds late, longer than a reply takes to come.
After a poll that found nothing the next waits sleep at once, more of them after each further miss
(see ``_spin``): on a machine whose cores are all busy, polling holds the core the peer needs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import math
import os
import pickle
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

from boss_sidecar._framing import _after, _ChannelEnded, _FrameReader, _header, _Oversized
from boss_sidecar._pending import _Deadlines, _deliver, _describe, _Expired, _Pending
from boss_sidecar._pickling import _dump_parts, _dumps, _which_unpicklable, portable_error
from boss_sidecar._pool import _Pool
from boss_sidecar._salvage import _load_structure, _salvage, _StandIn
from boss_sidecar._spin import _SpinBudget
from boss_sidecar._standby import _Standby
from boss_sidecar.errors import (
    CallTimeout,
    EncodeError,
    MessageTooLarge,
    ProtocolError,
    RemoteError,
    SidecarCrashed,
    SidecarError,
    SidecarUnavailable,
)
from boss_sidecar.logs import get_logger
from boss_sidecar.protocol import (
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    Call,
    Error,
    Event,
    GetAttribute,
    Hello,
    Message,
    MessageType,
    Ping,
    Pong,
    Result,
    SetAttribute,
    Stop,
    UnknownMessageType,
    decode,
    id_of,
    new_id,
)

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0
DEFAULT_SEND_TIMEOUT = 30.0
DEFAULT_MAX_BACKLOG_BYTES = 64 * 1024 * 1024
DEFAULT_BUSY_WAIT = 100e-6
MAX_BUSY_WAIT = 0.01  # longer polling only burns CPU: a wake from sleep costs far less than this

_log = get_logger("boss_sidecar.rpc")

_PARTS_PER_WRITE = 512  # buffers per sendmsg/writev call (IOV_MAX is 1024 on Linux)
_SEND_FLAGS = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)
_CORK_PARTS = 32  # a loop's corked requests are written once this many frame parts wait (16 messages)
_LINGER = 0.002  # seconds the standby reads on after a message, in case more comes (see _read_on_standby)
_RESCUE_AFTER = 0.001  # a batch's calls not run by then on the reader go to the pool (see _run_read_batch)
_HOLD_BYTES = 256 * 1024  # replies held for one write at most (see _hold)
_SETTLING_GRACE = 5.0  # a reply being delivered as the caller times out arrives within this
_PLAIN = frozenset({type(None), bool, int, float, str, bytes, tuple, list, dict})  # results never awaitable

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_SEND_TIMEOUT", "DEFAULT_TIMEOUT", "Endpoint", "portable_error"]


def _is_public(name: str) -> bool:
    return name.isidentifier() and not name.startswith("_")


class Endpoint:
    """One end of a channel: serves ``target`` to the peer and calls the peer.

    ``allow`` adds names beyond the public ones (``_private`` and dunders are refused otherwise).
    With ``loop`` set, everything served runs on that event loop, in order (BOSS's semantics);
    otherwise calls run in a thread pool and attribute access and events on the reader thread.
    ``on_stop`` handles the peer's stop request; ``on_close`` runs once when the channel ends.
    ``describe`` names a served call in overdue reports and result errors when the target knows better than its
    method name (a dispatcher such as the worker's ``call_object``); None falls back to that.
    ``callers_read`` suits the side that mostly calls: a sync caller reads its own reply. Work for the peer
    never runs on a caller's thread (it may hold locks that work needs). False suits the side that mostly
    serves: a reader runs each call it reads. Without epoll (not Linux) a reader always waits on the channel.
    """

    def __init__(
        self,
        connection: Connection,
        target: object = None,
        *,
        name: str = "endpoint",
        allow: Iterable[str] = (),
        loop: asyncio.AbstractEventLoop | None = None,
        on_stop: Callable[[str], None] | None = None,
        on_close: Callable[[SidecarError], None] | None = None,
        max_workers: int = 32,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        default_timeout: float = DEFAULT_TIMEOUT,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        overdue_grace: float = 2.0,
        describe: Callable[[Call], str | None] | None = None,
        max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
        callers_read: bool = True,
        busy_wait: float = DEFAULT_BUSY_WAIT,
        start: bool = True,
    ) -> None:
        if not 0 <= busy_wait <= MAX_BUSY_WAIT:
            raise ValueError(f"busy_wait must be between 0 and {MAX_BUSY_WAIT:g} seconds, got {busy_wait!r}")
        self.name = name
        self._spin = _SpinBudget(busy_wait)
        self._connection = connection
        self._fd = connection.fileno()
        self._socket = _socket_of(self._fd)
        self._target = target
        self._allow = frozenset(allow)
        self._loop = loop
        self._on_stop = on_stop
        self._on_close = on_close
        self._max_bytes = max_message_bytes
        self._default_timeout = default_timeout
        self._log = _log.bind(endpoint=name)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._send_timeout = send_timeout
        self._outbox: list[Any] = []  # frames (header, bytes, ...) not yet handed to the socket
        self._outbox_lock = threading.Lock()
        self._writing = False  # a thread is writing the outbox; others only add to it
        self._backlog = 0  # bytes in the outbox: past max_backlog_bytes, senders wait (see _send_bytes)
        self._max_backlog = max_backlog_bytes
        self._drained = threading.Condition(self._outbox_lock)
        self._throttled = 0  # senders waiting on _drained
        self._corked: set[asyncio.AbstractEventLoop] = set()  # loops in a turn that woke callers (see _send_bytes)
        self._holding: dict[int, _Batch] = {}  # threads running a batch of calls, by ident (see _hold)
        self._undelivered: dict[asyncio.AbstractEventLoop, list[Any]] = {}  # replies a loop is yet to take
        self._deadlines: dict[asyncio.AbstractEventLoop, _Deadlines] = {}
        self._closed: SidecarError | None = None
        # One more thread than max_workers: the one reading (see _read_loop).
        self._pool = _Pool(max_workers + 1, f"{name}-serve")
        self._init_reading(callers_read)
        self.peer: Hello | None = None
        self.peer_overdue: list[str] = []
        """What the peer's last pong reported as overdue: calls running long after their timeout."""
        self._running: dict[int, tuple[Call, float]] = {}  # served calls and when they arrived
        self._overdue_grace = overdue_grace
        self._describe_call = describe
        self.peer_ready = threading.Event()
        self.stop_acknowledged = threading.Event()
        self.closed = threading.Event()
        self._handlers: dict[MessageType, Callable[[Any], None]] = {
            MessageType.CALL: self._on_call,
            MessageType.GET: self._on_get,
            MessageType.SET: self._on_set,
            MessageType.RESULT: self._on_result,
            MessageType.ERROR: self._on_error,
            MessageType.HELLO: self._on_hello,
            MessageType.PING: self._on_ping,
            MessageType.PONG: self._on_pong,
            MessageType.EVENT: self._on_event,
            MessageType.STOP: self._on_stop_request,
        }
        self._bound_send_timeout()
        if start:
            self.start()

    # ----------------------------------------------------------------- lifecycle
    def _init_reading(self, callers_read: bool) -> None:
        """The state of the reading role (see the module's docstring)."""
        self._started = False
        self._reading: threading.Thread | None = None  # the thread in the reading role
        self._role = threading.Lock()  # held by the thread reading; never released once the channel ended
        self._standby: _Standby | None = None
        self._frames: _FrameReader | None = None
        self._callers_read = callers_read  # kept only if the standby is supported (see start)
        self._deferred: list[Callable[[], None]] | None = None  # work for the peer a caller read (see _read_for)
        self._read_bound = math.inf  # the socket's receive timeout (see _bound_read)
        self._awaited = 0  # async requests awaited: while any is, the standby reads on (see _read_on)
        self._streaming = False  # the standby read work for the peer: it reads on a moment (see _read_on)
        self._one_at_a_time = False  # the last read brought one message: the peer waits for each answer
        self._read_over = threading.Event()  # set once the reading role ended with the channel
        self._release_wanted = False  # close() could not release the channel: the last reader does
        self._released = False
        # What the reader wakes at the end of a batch (see _hand_over_batch).
        self._batch_settled: list[tuple[_Pending, Any, BaseException | None]] = []
        self._batch_calls: list[Call] = []

    def start(self) -> None:
        """Start reading and greet the peer (a BOSS peer ignores the greeting)."""
        self._started = True
        self._frames = _FrameReader(self._fd, self._max_bytes)
        self._role.acquire()  # first: the standby may wake at once (a hang-up) and must find the role taken
        self._standby = _Standby(self._fd, self._take_over, self.name) if _Standby.SUPPORTED else None
        self._callers_read = self._callers_read and self._standby is not None
        if self._callers_read:
            self._set_down()
        else:
            self._pool.submit(self._read_loop, self._frames)
        with contextlib.suppress(SidecarError):
            self._send(Hello(id=new_id(), version=PROTOCOL_VERSION, pid=os.getpid(), name=self.name))

    @property
    def is_closed(self) -> bool:
        return self._closed is not None

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def close(self, reason: str = "endpoint closed") -> None:
        """Close the channel, fail pending calls with SidecarUnavailable; safe to call twice."""
        self._mark_closed(SidecarUnavailable(f"{self.name}: {reason}"))
        self._wake_reader()
        if self._started and threading.current_thread() is not self._reading:
            self._read_over.wait(timeout=1.0)
        if any(job == self._read_loop for job, _ in self._pool.shutdown()):
            self._read_over.set()  # the reading role was passed on but not yet taken up: no one reads
        if not self._started or self._read_over.is_set():
            self._release_channel()
        else:
            self._release_wanted = True
            if self._read_over.is_set():  # the reader ended just now, before it could see the flag
                self._release_channel()

    def wait_peer(self, timeout: float) -> Hello:
        """Wait for the peer's hello (our peers send one first thing); CallTimeout otherwise."""
        if not self.peer_ready.wait(timeout):
            raise CallTimeout(f"{self.name}: peer did not say hello within {timeout:g}s")
        if self.peer is None:  # woken by the channel closing
            self._raise_if_closed()
        assert self.peer is not None
        return self.peer

    def abandon(self) -> None:
        """In a forked child: let go of the parent's channel without shutting it down for the parent."""
        self._mark_closed(SidecarUnavailable(f"{self.name}: belongs to the parent process"))
        self._release_channel()

    def overdue(self) -> list[str]:
        """Served calls running (or queued) well past the timeout their caller gave them."""
        now = time.monotonic()
        return [
            f"{self._name_served(call)} running {now - started:.1f}s, past its {call.timeout:g}s timeout"
            for call, started in list(self._running.values())
            if call.timeout is not None and now - started > call.timeout + self._overdue_grace
        ]

    def _name_served(self, call: Call) -> str:
        if self._describe_call is not None:
            with contextlib.suppress(Exception):  # a report must not fail because a name could not be made
                named = self._describe_call(call)
                if named:
                    return named
        return _describe(call)

    def _mark_closed(self, error: SidecarError) -> bool:
        with self._lock:
            if self._closed is not None:
                return False
            self._closed = error
            pending, self._pending = self._pending, {}
        with self._outbox_lock:
            self._outbox = []
            self._backlog = 0
            self._drained.notify_all()
        while pending:  # popitem, not iteration: a reply or a timeout may take entries concurrently
            _, request = pending.popitem()
            request.settle(error=type(error)(f"{error} (during {request.what})"))
        self.closed.set()
        self.peer_ready.set()  # wake wait_peer
        if self._on_close is not None:
            try:
                self._on_close(error)
            except Exception:
                self._log.exception("on_close handler failed")
        return True

    def _release_channel(self) -> None:
        """Close our file descriptors (without shutting the socket down for other holders); once."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._stop_standby()
        with contextlib.suppress(OSError):
            if self._socket is not None:
                self._socket.close()
            self._connection.close()

    def _wake_reader(self) -> None:
        """Unblock the reader: shutting a socket down wakes a thread blocked reading it."""
        with contextlib.suppress(OSError, ValueError):
            if self._socket is not None:
                self._socket.shutdown(socket.SHUT_RDWR)

    def _bound_send_timeout(self) -> None:
        """Bound a blocked write (peer stopped reading) so the writer thread cannot wait forever."""
        with contextlib.suppress(OSError, ValueError):
            if self._socket is not None:
                self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self._send_timeout))

    def _raise_if_closed(self) -> None:
        if self._closed is not None:
            raise type(self._closed)(str(self._closed))

    # ----------------------------------------------------------------- calling the peer
    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``method`` on the peer's object and return its result (or raise its exception)."""
        return self.request(method, args, kwargs, timeout=timeout)

    def request(
        self,
        method: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """``call`` with explicit args and kwargs, for methods that take a ``timeout`` of their own."""
        seconds = self._timeout(timeout)
        message = Call(id=new_id(), method=method, args=tuple(args), kwargs=kwargs or {}, timeout=seconds)
        return self._round_trip(message, seconds)

    def get_attribute(self, name: str, timeout: float | None = None) -> Any:
        """Read attribute ``name`` of the peer's object."""
        message = GetAttribute(id=new_id(), name=name)
        return self._round_trip(message, self._timeout(timeout))

    def set_attribute(self, name: str, value: Any, timeout: float | None = None) -> None:
        """Write attribute ``name`` of the peer's object and wait for its acknowledgement."""
        message = SetAttribute(id=new_id(), name=name, value=value, ack=True)
        self._round_trip(message, self._timeout(timeout))

    async def acall(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Awaitable ``call``."""
        return await self.arequest(method, args, kwargs, timeout=timeout)

    async def arequest(
        self,
        method: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Awaitable ``request``."""
        seconds = self._timeout(timeout)
        message = Call(id=new_id(), method=method, args=tuple(args), kwargs=kwargs or {}, timeout=seconds)
        return await self._async_round_trip(message, seconds)

    async def aget_attribute(self, name: str, timeout: float | None = None) -> Any:
        """Awaitable ``get_attribute``."""
        message = GetAttribute(id=new_id(), name=name)
        return await self._async_round_trip(message, self._timeout(timeout))

    async def aset_attribute(self, name: str, value: Any, timeout: float | None = None) -> None:
        """Awaitable ``set_attribute``."""
        message = SetAttribute(id=new_id(), name=name, value=value, ack=True)
        await self._async_round_trip(message, self._timeout(timeout))

    def notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        """One-way call: the peer runs ``method`` in arrival order; no reply, errors logged there."""
        self._send(Event(id=new_id(), method=method, args=args, kwargs=kwargs))

    def set_attribute_nowait(self, name: str, value: Any) -> None:
        """BOSS's one-way attribute write: no acknowledgement."""
        self._send(SetAttribute(id=new_id(), name=name, value=value))

    def ping(self, timeout: float | None = None) -> float:
        """Heartbeat: the round trip in seconds, answered by the peer's reader thread."""
        message = Ping(id=new_id(), sent=time.monotonic())
        return float(self._round_trip(message, self._timeout(timeout)))

    def request_stop(self, reason: str = "stop requested", timeout: float | None = None) -> None:
        """Ask the peer to release what it holds and exit; returns when it acknowledged."""
        message = Stop(id=new_id(), reason=reason)
        self._round_trip(message, self._timeout(timeout))

    # ----------------------------------------------------------------- the shared core
    def _timeout(self, timeout: float | None) -> float | None:
        """Seconds to wait, or None for no limit (infinity, or more than a lock wait can take)."""
        value = self._default_timeout if timeout is None else timeout
        return None if value > threading.TIMEOUT_MAX else value

    def _begin(self, message: Message, loop: asyncio.AbstractEventLoop | None = None) -> _Pending:
        """Register the request and send it; the send never waits on the channel, so deadlines hold."""
        parts, size = self._encode(message)
        pending = _Pending(message, loop)
        with self._lock:
            self._raise_if_closed()
            self._pending[message.id] = pending
        try:
            self._send_parts(parts, size, loop)
        except BaseException:
            self._pending.pop(message.id, None)
            raise
        if self._holding:
            self._out_of_batch()
        return pending

    def _round_trip(self, message: Message, seconds: float | None) -> Any:
        """Send a request and block for its outcome, reading the channel for it if no one else is."""
        pending = self._begin(message)
        if self._callers_read and self._role.acquire(blocking=False):
            settled = self._read_for(pending, seconds)
        else:
            settled = pending.wait(seconds)
        if not settled:
            if self._pending.pop(message.id, None) is not None:
                raise CallTimeout(f"{self.name}: {pending.what} got no answer within {seconds:g}s")
            # The reader (or close) took it just now and is settling it: the outcome is a moment away.
            if not pending.wait(_SETTLING_GRACE):
                raise CallTimeout(f"{self.name}: {pending.what} got no answer within {seconds:g}s")
        return pending.outcome()

    async def _async_round_trip(self, message: Message, seconds: float | None) -> Any:
        """Send a request and await its outcome; the reader hands it to this loop."""
        loop = asyncio.get_running_loop()
        pending = self._begin(message, loop)
        future = pending.future
        if seconds is not None:
            self._deadlines_of(loop).add(seconds, message.id, future)
        with self._lock:
            self._awaited += 1
        try:
            if self._callers_read and self._role.acquire(blocking=False):
                assert self._standby is not None
                self._standby.disarm()
                if not self._read_on_loop(pending, loop, seconds):
                    self._standby.hand(functools.partial(self._read_on_standby, asked=True))
            return await future
        except _Expired:
            self._pending.pop(message.id, None)
            raise CallTimeout(f"{self.name}: {pending.what} got no answer within {seconds:g}s") from None
        except asyncio.CancelledError:
            self._pending.pop(message.id, None)
            raise
        finally:
            with self._lock:
                self._awaited -= 1

    def _deadlines_of(self, loop: asyncio.AbstractEventLoop) -> _Deadlines:
        deadlines = self._deadlines.get(loop)
        if deadlines is None:
            with self._lock:
                for closed in [known for known in self._deadlines if known.is_closed()]:
                    del self._deadlines[closed]
                deadlines = self._deadlines[loop] = _Deadlines(loop)
        return deadlines

    def _encode(self, message: Message) -> tuple[list[bytes], int]:
        """The message pickled, as the parts to write, and its size.

        Events (samples, put batches, query replies: the bulk traffic) are pickled in parts, their
        large payloads uncopied (see _dump_parts); other messages in one piece, which is quicker
        for the small ones requests and replies mostly are."""
        try:
            wire = message.to_wire()
            parts = _dump_parts(wire) if type(message) is Event else [_dumps(wire)]
        except Exception as exc:
            what = _describe(message)
            raise EncodeError(f"{self.name}: {what}: {_which_unpicklable(message)} cannot be pickled: {exc}") from exc
        size = sum(map(len, parts)) if len(parts) > 1 else len(parts[0])
        if size > self._max_bytes:
            raise MessageTooLarge(
                f"{self.name}: {_describe(message)}: message of {size} bytes"
                f" exceeds the limit of {self._max_bytes} bytes"
            )
        return parts, size

    def _send(self, message: Message) -> None:
        self._send_parts(*self._encode(message))

    def _send_parts(self, body: list[bytes], size: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Queue one message (its pickle in parts, ``size`` bytes in all) and write the queue unless
        another thread is writing it already.

        On an event loop (``loop``) in a turn that woke callers, the write waits for the end of the
        turn: the requests the woken tasks make go out with one system call. A thread that sends
        meanwhile writes them along with its own, so a busy loop never holds up other senders."""
        header = _header(size)
        with self._outbox_lock:
            self._raise_if_closed()
            if self._backlog > self._max_backlog and threading.current_thread() is not self._reading:
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
                    raise CallTimeout(f"{self.name}: peer not reading: {self._backlog} bytes still queued")
                self._raise_if_closed()
            self._backlog += len(header) + size
            if self._writing or self._outbox or loop in self._corked:
                self._outbox.append(header)
                self._outbox += body
                if self._writing or (loop in self._corked and len(self._outbox) < _CORK_PARTS):
                    return
                parts = None
            else:
                parts = [header, *body]  # nothing queued: write it directly
            self._writing = True
        self._write_outbox(block=False, parts=parts)

    def _hold(self, batch: _Batch, body: list[bytes], size: int) -> bool:
        """Keep a reply of a call in ``batch`` (see _run_read_batch), to go out with the batch's others in one
        write; False if the batch holds no more (released). Past _HOLD_BYTES they all go at once."""
        header = _header(size)
        with self._outbox_lock:
            if self._holding.get(batch.owner) is not batch:
                return False
            self._raise_if_closed()
            batch.held.append(header)
            batch.held += body
            batch.size += len(header) + size
            full = batch.size >= _HOLD_BYTES
        if full:
            self._release(batch)
        return True

    def _release(self, batch: _Batch) -> None:
        """Send the replies ``batch`` holds and hold no more; once (by the reader, or by the rescue)."""
        with self._outbox_lock:
            if self._holding.get(batch.owner) is not batch:
                return
            del self._holding[batch.owner]
            held, batch.held = batch.held, []
            if not held or self._closed is not None:
                return
            self._backlog += batch.size
            self._outbox += held
        self._flush()

    def _deliver_later(
        self, loop: asyncio.AbstractEventLoop, items: list[tuple[asyncio.Future[Any], Any, Any]]
    ) -> None:
        """Have ``loop`` resolve these futures: added to the replies it has yet to take, if any, so a
        loop is woken once for all the batches read before it got round to them."""
        with self._lock:
            waiting = self._undelivered.get(loop)
            if waiting is not None:
                waiting += items
                return
            self._undelivered[loop] = items
        try:
            loop.call_soon_threadsafe(self._deliver_on, loop)
        except RuntimeError:  # that caller's loop is closed: no one to tell
            with self._lock:
                self._undelivered.pop(loop, None)

    def _deliver_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``: resolve the futures of the replies read for it; cork its writes for this turn, so
        the requests of the tasks woken go out together."""
        with self._lock:
            items = self._undelivered.pop(loop, [])
        self._corked.add(loop)
        for future, value, error in items:
            _deliver(future, value, error)
        loop.call_soon(self._uncork, loop)  # runs after the steps of the tasks just woken

    def _uncork(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._outbox_lock:
            self._corked.discard(loop)
        self._flush()

    def _flush(self) -> None:
        """Write what is queued, unless another thread is writing it already."""
        with self._outbox_lock:
            if self._writing or not self._outbox:
                return
            self._writing = True
        with contextlib.suppress(SidecarCrashed):  # the channel broke: closing failed every pending request
            self._write_outbox(block=False)

    def _write_outbox(self, *, block: bool, parts: list[Any] | None = None) -> None:
        """Write ``parts`` (if given) then until the outbox is empty; the caller set ``_writing``.

        Without ``block``, what the socket will not take at once goes to a writer thread (which
        blocks, bounded by the send timeout) so no caller waits here."""
        if parts is None:
            with self._outbox_lock:
                parts, self._outbox = self._outbox, []
                if not parts or self._closed is not None:
                    self._writing = False
                    return
        while True:
            try:
                rest = self._write(parts, block=block)
                with self._outbox_lock:
                    self._backlog -= sum(map(len, parts)) - sum(map(len, rest))
                    if self._throttled:
                        self._drained.notify_all()
                    if not rest:  # take what was queued meanwhile, under the same lock
                        parts, self._outbox = self._outbox, []
                        if not parts or self._closed is not None:
                            self._writing = False
                            return
            except OSError as exc:
                problem = SidecarCrashed(f"{self.name}: channel broken while sending: {exc}")
                with self._outbox_lock:
                    self._writing = False
                self._mark_closed(problem)
                self._wake_reader()
                if block:
                    return
                raise problem from exc
            if rest:
                with self._outbox_lock:
                    self._outbox[:0] = rest
                writer = threading.Thread(
                    target=self._write_outbox, kwargs={"block": True}, name=f"{self.name}-writer", daemon=True
                )
                writer.start()
                return

    def _write(self, parts: list[Any], *, block: bool) -> list[Any]:
        """Write ``parts`` in order; return what is left when the socket would block (never with ``block``).

        A partial write is followed by the rest, so framing holds; a failed write (including the send
        timeout running out) raises OSError, and the channel is dead either way."""
        sock = self._socket
        while parts:
            chunk = parts[:_PARTS_PER_WRITE]
            try:
                if sock is None:
                    sent = os.writev(self._fd, chunk)
                else:
                    sent = sock.sendmsg(chunk, (), 0 if block else _SEND_FLAGS)
            except BlockingIOError:
                if block:
                    raise
                return parts
            parts = _after(parts, sent)
        return parts

    def _send_reply(self, message: Result | Error) -> None:
        """Send a served call's reply, or hold it if this thread runs a batch of calls (see _hold). Only
        replies: a request the call makes (a call back to the peer) must go out at once."""
        parts, size = self._encode(message)
        batch = self._holding.get(threading.get_ident()) if self._holding else None  # a dict read: no lock
        if batch is None or not self._hold(batch, parts, size):
            self._send_parts(parts, size)

    def _send_quietly(self, message: Message) -> None:
        """Send a reply; if the channel is gone there is no one left to tell."""
        try:
            self._send(message)
        except SidecarError as exc:
            self._log.debug("reply not sent", reason=str(exc))

    def _settle(self, pending: _Pending, value: Any = None, error: BaseException | None = None) -> None:
        """Settle from the reader, at the end of the current batch."""
        self._batch_settled.append((pending, value, error))

    def _hand_over_batch(
        self, frames: _FrameReader | None, here: asyncio.AbstractEventLoop | None = None
    ) -> list[Call]:
        """Wake the callers answered and start the calls received in the batch just read.

        Done last, just before the reader blocks again (which hands back the GIL): a thread woken
        earlier would find the GIL taken and sleep once more, and each wake costs microseconds.
        Async callers are woken with one hand-off per event loop for the whole batch; those of
        ``here``, the loop running this thread (an async caller reading), are resolved at once.

        The batch's calls are returned for the reader to run itself (see _read_loop); when closing
        they go to the pool (which refuses them) and none is returned."""
        settled, self._batch_settled = self._batch_settled, []
        calls, self._batch_calls = self._batch_calls, []
        per_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, Any]]] = {}
        for pending, value, error in settled:
            if pending.loop is None:
                pending.settle(value, error)
            else:
                per_loop.setdefault(pending.loop, []).append((pending.future, value, error))
        for loop, items in per_loop.items():
            if loop is here:
                for future, value, error in items:
                    _deliver(future, value, error)
            else:
                self._deliver_later(loop, items)
        if frames is not None and self._closed is None:
            return calls
        self._start_calls(calls)
        return []

    def _start_calls(self, calls: list[Call]) -> None:
        """Calls read where they may not run (a caller's thread, the standby, closing): to the pool."""
        for call in calls:
            self._start_call(call)

    def _start_call(self, message: Call) -> None:
        """Run a served call on a pool thread."""
        try:
            self._pool.submit(self._run_call, message)
        except RuntimeError:  # pool shut down: we are closing
            self._send_quietly(Error(id=message.id, error=SidecarUnavailable(f"{self.name} is closing")))

    # ----------------------------------------------------------------- reading
    def _read_loop(self, frames: _FrameReader, on_standby: bool = False) -> None:
        """The reading role, on a pool thread that holds ``_role``: read and route batches until the
        channel ends.

        Leader/follower: a call read is run on this thread, so it starts without waiting for another
        thread to wake. Meanwhile the role is free and the standby watches the channel: if a message
        arrives before the call returns, it starts another reader; if not, this thread takes the
        role back and reads on, and a quick call woke no other thread. One thread at a time holds the
        role, so messages are handled in arrival order and exactly one thread sees the channel end.

        ``on_standby``: the standby reads because no pool thread was free to; it runs no call itself
        and passes the reading to a pool thread as soon as one is free."""
        me = threading.current_thread()
        own_name = me.name
        while True:
            self._reading, me.name = me, f"{self.name}-reader"
            try:
                kept = self._read_until_call(frames, on_standby)
            except _ChannelEnded as exc:
                me.name = own_name
                self._channel_ended(str(exc))
                return
            me.name = own_name
            if not kept or not self._run_read_calls(kept, frames):
                return  # another thread reads now

    def _channel_ended(self, reason: str) -> None:
        """The reader saw the channel end: fail what waits. The role stays taken, so no one reads a
        closed descriptor."""
        self._reading = None
        self._hand_over_batch(None)
        if self._mark_closed(SidecarCrashed(f"{self.name}: {reason}")):
            self._log.info("channel closed", reason=reason)
        self._stop_standby()
        self._read_over.set()
        if self._release_wanted:
            self._release_channel()

    def _set_down(self) -> None:
        """Free the reading role (held): a caller may take it; the standby reads what comes meanwhile."""
        assert self._standby is not None
        self._reading = None
        self._role.release()
        self._standby.arm()

    def _read_for(self, pending: _Pending, seconds: float | None) -> bool:
        """Holding the role: read the channel until ``pending`` is settled (True) or ``seconds`` pass.

        The caller reads its own reply, so no other thread wakes to hand it over. Other replies are
        settled as the reader would; work for the peer (events, attribute access) goes, with the
        role and the rest of the batch, to the standby thread, which runs it in order and starts calls in
        the pool. As when a reader runs that work itself, the batch's replies are settled after it ran."""
        standby, frames = self._standby, self._frames
        assert standby is not None and frames is not None
        standby.disarm()
        self._reading = threading.current_thread()
        deadline = None if seconds is None else time.monotonic() + seconds
        role = _Role()
        try:
            while not pending.wait(0):
                if len(self._pending) == 1:
                    self._await_data(deadline)  # before _bound_read, which on an os.pipe sleeps in poll
                if not self._bound_read(deadline):
                    return False
                try:
                    interrupt = self._read_as_caller(frames, role)
                except BlockingIOError:  # the read's bound passed (see _bound_read)
                    continue
                if interrupt is not None:
                    raise interrupt
                if not role.held:
                    return pending.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            return True
        except _ChannelEnded as exc:
            role.held = False
            self._channel_ended(str(exc))
        finally:
            if role.held:
                self._set_down()
        return pending.wait(0)  # the channel's end settled it

    def _read_on_loop(self, pending: _Pending, loop: asyncio.AbstractEventLoop, seconds: float | None) -> bool:
        """Holding the role (the standby disarmed), on the async caller's loop thread: busy-wait up to
        ``busy_wait`` for the reply and read it here. True if the role is taken care of (set down, or gone
        with work for the peer to the standby, or the channel ended); False to hand it to the standby.

        Only the lone async caller does (one request pending): a loop woken by another thread starts as late
        as any thread woken from sleep, and a reply read here resolves the future before it is awaited. Work for
        the peer read meanwhile goes, with the role, to the standby, as in ``_read_for``; the loop never blocks:
        it reads only what ``readable`` found, and a message only partly come waits for the standby."""
        frames = self._frames
        assert frames is not None
        if len(self._pending) != 1 or self._awaited != 1:
            return False
        budget = self._spin.next_wait()
        if not budget:
            return False
        if loop in self._corked:  # the request waits for the end of the turn; no one else's will join it
            self._flush()
        self._reading = threading.current_thread()
        end = time.monotonic() + (budget if seconds is None else min(budget, seconds))
        role = _Role()
        try:
            while pending.request.id in self._pending:
                if not self._spin_until(end):
                    role.held = False  # the caller hands the role to the standby
                    return False
                try:
                    interrupt = self._read_as_caller(frames, role, loop)
                except BlockingIOError:  # readable, yet nothing to read after all
                    continue
                if interrupt is not None:
                    raise interrupt
                if not role.held:
                    return True
            return True
        except _ChannelEnded as exc:
            role.held = False
            self._channel_ended(str(exc))
            return True
        finally:
            if role.held:
                self._set_down()

    def _read_as_caller(
        self, frames: _FrameReader, role: _Role, here: asyncio.AbstractEventLoop | None = None
    ) -> BaseException | None:
        """On a caller's thread, holding the role: read and route one batch; the interrupt (Ctrl-C) met while
        routing, to raise once the role is seen to.

        Work for the peer in the batch never runs here (the caller may hold locks it needs): it goes, with
        the role (``role.held`` cleared first) and the batch's replies, to the standby (see _finish_batch), so
        the replies are settled after it ran, as when a reader runs it. ``here``: the caller's loop, whose
        futures are resolved at once."""
        assert self._standby is not None
        self._deferred = []
        try:
            interrupt = self._route(self._read_batch(frames))
        finally:
            deferred, self._deferred = self._deferred, None
        if deferred or self._batch_calls:
            role.held = False  # before the hand-over: the work may interrupt this thread (Ctrl-C) at once
            self._standby.hand(functools.partial(self._finish_batch, deferred))
            return interrupt
        self._hand_over_batch(frames, here)
        return interrupt

    def _bound_read(self, deadline: float | None) -> bool:
        """Bound the next read so it cannot block past ``deadline`` (None: no deadline); False once it passed.

        A read that blocks with a receive timeout wakes about as fast as a bare pipe read; waiting for
        the descriptor to be readable first (poll) cost some 35 microseconds more a wake-up here. The
        timeout is set anew only when it would outlast the deadline or is under half the time left (a
        system call saved on most calls): one that ends sooner only makes the read return early, to be
        bounded again. Only the thread holding the role reads, so the option is its alone meanwhile."""
        if deadline is None:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if self._socket is None:  # an os.pipe: no receive timeout
            assert self._standby is not None
            return self._standby.readable(left)
        if not left / 2 <= self._read_bound <= left:
            self._set_read_bound(left)
        return True

    def _await_data(self, deadline: float | None = None) -> None:
        """Busy-wait up to ``busy_wait`` seconds (and not past ``deadline``) for the peer's next bytes,
        before a read that would sleep.

        On a virtual machine a thread woken from sleep starts some 20 to 50 microseconds late (the
        virtual CPU halted), against about one for a poll that finds data, and a reply usually comes
        within tens of microseconds. Only the lone waiter spins (one request pending, or no served call
        running): where other threads have work, the spinner would only take turns at the GIL from them.
        After a miss the next waits sleep at once (see _SpinBudget): on a busy machine the poll holds the core
        the peer needs."""
        budget = self._spin.next_wait()
        if not budget or self._standby is None:
            return
        end = time.monotonic() + budget
        self._spin_until(end if deadline is None else min(end, deadline))

    def _spin_until(self, end: float) -> bool:
        """Poll until the peer's bytes are there (True) or the clock passes ``end``; tell the budget which."""
        standby, clock = self._standby, time.monotonic
        assert standby is not None
        while not standby.readable():
            if clock() >= end:
                self._spin.miss()
                return False
        self._spin.hit()
        return True

    def _set_read_bound(self, seconds: float) -> None:
        """Set the socket's receive timeout (math.inf: none); a no-op on an os.pipe."""
        if self._socket is not None and self._read_bound != seconds:
            self._socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(0 if seconds == math.inf else seconds)
            )
            self._read_bound = seconds

    def _finish_batch(self, works: list[Callable[[], None]]) -> None:
        """On the standby, with the role a caller passed on: run the peer's work read in order, settle the
        batch's replies and start its calls, then set the role down."""
        self._reading = threading.current_thread()
        try:
            for work in works:
                try:
                    work()
                except Exception:  # each reports its own failures; this is the last resort
                    self._log.exception("served work failed")
            self._start_calls(self._hand_over_batch(self._frames))
        finally:
            self._set_down()

    def _read_on_standby(self, asked: bool = False) -> None:
        """On the standby, holding the role (callers read): read what came while no caller read (``asked``: an
        async caller just sent a request), then read on, blocked, while an async caller awaits a reply or, for a
        moment, in case more comes (a stream of events); then set the role down.

        A thread blocked reading wakes sooner than one waiting in epoll (here, by some 35 microseconds), and
        an async caller cannot read for itself."""
        standby, frames = self._standby, self._frames
        assert standby is not None and frames is not None
        if not (asked and self._awaited) and not standby.readable():  # a caller read it before we took the role
            self._set_down()
            return
        self._reading = threading.current_thread()
        interrupt = None
        while interrupt is None:
            try:
                interrupt = self._route(self._read_batch(frames))
            except BlockingIOError:  # nothing came within the read's bound
                if not self._awaited:
                    break
            except _ChannelEnded as exc:
                self._channel_ended(str(exc))
                return
            else:
                self._start_calls(self._hand_over_batch(frames))
            if not self._read_on():
                break
        self._set_down()
        if interrupt is not None:
            raise interrupt

    def _read_on(self) -> bool:
        """Whether the standby reads on, blocked: unbounded while an async caller awaits a reply yet to come, else
        a moment if it just read work for the peer (events come in streams). Not after replies alone: a sync
        caller reads its own reply, and the lone async caller too (see _read_on_loop), if the standby does not
        hold on to the reading."""
        streaming, self._streaming = self._streaming, False
        if self._awaited and self._pending:
            self._set_read_bound(math.inf)
            return True
        if not streaming or self._socket is None:  # an os.pipe has no receive timeout
            return False
        self._set_read_bound(_LINGER)
        return True

    @staticmethod
    def _read_batch(frames: _FrameReader) -> list[memoryview | bytes | bytearray | _Oversized]:
        """One read of the channel and the messages it completed. A failed read ends the channel
        (_ChannelEnded, naming why); a read whose receive timeout passed (BlockingIOError) does not."""
        try:
            return frames.batch()
        except BlockingIOError:
            raise
        except (OSError, ValueError, ProtocolError) as exc:
            raise _ChannelEnded(f"channel failed while reading: {exc}") from exc

    def _route(self, batch: list[memoryview | bytes | bytearray | _Oversized]) -> BaseException | None:
        """Route every message read. An interrupt (Ctrl-C in a caller reading) is returned once all are routed, so
        none is lost."""
        interrupt = None
        for frame in batch:
            try:
                if isinstance(frame, _Oversized):
                    self._oversized(frame)
                else:
                    self._handle_bytes(frame)
            except BaseException as exc:
                interrupt = interrupt or exc
        return interrupt

    def _read_until_call(self, frames: _FrameReader, on_standby: bool) -> list[Call]:
        """Read and route batches until one brings calls for this thread to run; none when, on
        standby, the reading passed to a pool thread."""
        while True:
            if self._one_at_a_time and not self._running:
                self._await_data()
            batch = self._read_batch(frames)
            self._one_at_a_time = len(batch) == 1
            interrupt = self._route(batch)
            kept = self._hand_over_batch(frames)
            if interrupt is not None:
                raise interrupt
            if on_standby:
                self._start_calls(kept)
                if self._pass_reading(frames):
                    return []
            elif kept:
                return kept

    def _run_read_calls(self, calls: list[Call], frames: _FrameReader) -> bool:
        """Run the calls the reader read; True if this thread still reads after.

        Several at once run here as a batch if a pool thread is free to watch it (see _run_read_batch);
        otherwise all but the last start in the pool, as one at a time would."""
        if len(calls) > 1 and self._standby is not None:
            batch = _Batch(calls, threading.get_ident())
            with contextlib.suppress(RuntimeError):  # pool shut down: we are closing
                if self._pool.try_submit(self._rescue, batch):
                    return self._run_read_batch(batch)
        self._start_calls(calls[:-1])
        return self._run_read_call(calls[-1], frames)

    def _run_read_batch(self, batch: _Batch) -> bool:
        """Run calls read together on the reader's thread, one after another, their replies held to go out in
        one write (see _hold); True if this thread still reads after.

        Requests that come together (a peer's many tasks or threads) mostly want quick answers: run here they
        wake no pool thread each, the peer reads their replies with one read instead of one each, and what
        arrives meanwhile waits to be read as one batch. Should a call be slow, the pool thread watching the
        batch (see _rescue) steps in after _RESCUE_AFTER: the replies held go out, the calls not yet run start
        in the pool and the standby reads the channel again. So nothing waits on a slow call for longer than
        that."""
        standby = self._standby
        assert standby is not None
        me = threading.current_thread()
        self._reading = None
        with self._outbox_lock:
            self._holding[batch.owner] = batch
        self._role.release()  # for the standby, should the rescue arm it
        while (call := batch.take()) is not None:
            self._run_call(call)
        batch.done = True
        back = self._role.acquire(blocking=False)  # False: the standby read meanwhile and started another reader
        if back:
            if batch.armed:
                standby.disarm()
            self._reading = me
        self._release(batch)
        return back

    def _out_of_batch(self) -> None:
        """A call run in a batch (see _run_read_batch) asked the peer something and will wait for the answer: have
        the standby read the channel, and send the replies held, rather than wait for the rescue."""
        batch = self._holding.get(threading.get_ident())
        if batch is not None:
            self._let_standby_read(batch)
            self._release(batch)

    def _let_standby_read(self, batch: _Batch) -> None:
        """While the reader runs ``batch``, have the standby read what comes (the reader disarms it after)."""
        if not batch.armed:
            batch.armed = True
            assert self._standby is not None
            self._standby.arm()

    def _rescue(self, batch: _Batch) -> None:
        """On a pool thread, a moment after the reader started a batch of calls: if it has not run them all yet
        (a slow call), have the standby read the channel again, send the replies held and start the calls not
        yet reached in the pool. The wait is the point: a batch of quick calls is done by then."""
        if batch.done:
            return
        time.sleep(_RESCUE_AFTER)
        if batch.done:
            return
        self._let_standby_read(batch)
        self._release(batch)
        rest = batch.take_all()
        if rest:
            self._start_calls(rest[:-1])
            self._run_call(rest[-1])

    def _run_read_call(self, call: Call, frames: _FrameReader) -> bool:
        """Run a call the reader read, on the reader's thread; True if this thread still reads after.

        On a quiet channel the role is set down for the call and the standby watches; on a busy one
        (more already waiting) the role passes to a pool thread at once, one wake rather than the
        standby's two; with no pool thread free, the call goes to the pool and this thread reads on."""
        me = threading.current_thread()
        standby = self._standby
        self._reading = None  # before the role passes: the next reader names itself
        if standby is None or standby.readable() or not self._pool.has_free():
            with contextlib.suppress(RuntimeError):  # pool shut down: we are closing
                if self._pool.try_submit(self._read_loop, frames):
                    self._run_call(call)
                    return False
            self._reading = me
            self._start_call(call)
            return True
        self._role.release()
        standby.arm()
        outcome = self._call_outcome(call)
        back = self._role.acquire(blocking=False)  # False: a message came meanwhile, the standby started a reader
        if back:
            standby.disarm()  # before the reply goes out: the peer's next message must not wake the standby
            self._reading = me
        self._reply_call(call, *outcome)
        return back

    def _stop_standby(self) -> None:
        if self._standby is not None:
            self._standby.stop()

    def _take_over(self) -> None:
        """On the standby: a message arrived while no one read; read it (callers read), or start another reader
        (the reader runs a call)."""
        if not self._role.acquire(blocking=False):
            return  # the reader is back (or a caller reads)
        if self._callers_read:
            self._read_on_standby()
            return
        frames = self._frames
        assert frames is not None
        if not self._pass_reading(frames):
            self._read_loop(frames, on_standby=True)  # no pool thread free: read here meanwhile

    def _pass_reading(self, frames: _FrameReader) -> bool:
        """Hand the reading role (held) to a pool thread if one is free now."""
        self._reading = None  # before the role passes: the next reader names itself
        try:
            if self._pool.try_submit(self._read_loop, frames):
                return True
        except RuntimeError:  # pool shut down: we are closing; this thread reads to the end
            pass
        self._reading = threading.current_thread()
        return False

    def _handle_bytes(self, data: bytes | bytearray | memoryview) -> None:
        try:
            raw = pickle.loads(data)
        except Exception as exc:
            self._undecodable(bytes(data), exc)
            return
        try:
            message = decode(raw)
        except UnknownMessageType as exc:
            self._log.debug("ignored message of unknown type", error=str(exc))
            return
        except ProtocolError as exc:
            self._malformed(raw, exc)
            return
        try:
            self._handlers[message.TYPE](message)
        except Exception:
            self._log.exception("handler failed", type=str(message.TYPE))

    def _malformed(self, raw: object, error: ProtocolError) -> None:
        """Log it; fail the call it answers, or answer the request it was, so nothing waits."""
        message_id = id_of(raw)
        kind = raw.get("type") if isinstance(raw, dict) and isinstance(raw.get("type"), str) else None
        self._log.warning("malformed message", error=str(error), id=message_id)
        if message_id is None:
            return
        pending = self._pending.pop(message_id, None) if kind in (MessageType.RESULT, MessageType.ERROR) else None
        if pending is not None:
            self._settle(pending, error=ProtocolError(f"{self.name}: malformed reply to {pending.what}: {error}"))
        elif kind in REQUEST_TYPES and not (kind == MessageType.SET and not raw.get("ack")):  # type: ignore[attr-defined]  # kind set means raw is a dict
            self._send_quietly(Error(id=message_id, error=error))

    def _undecodable(self, data: bytes, error: Exception) -> None:
        """A message that does not unpickle here: answer what it was for from its structure.

        Its structure loads with stand-ins for every class it names (nothing is imported or run),
        which yields its id and type; an exception in it becomes a RemoteError with the remote
        type name, message and traceback."""
        raw = _load_structure(data)
        message_id = id_of(raw)
        kind = raw.get("type") if isinstance(raw, dict) and isinstance(raw.get("type"), str) else None
        self._log.warning("message could not be unpickled", error=repr(error), size=len(data), id=message_id, type=kind)
        if message_id is None or not isinstance(raw, dict):
            return
        pending = self._pending.pop(message_id, None) if kind in (MessageType.RESULT, MessageType.ERROR) else None
        if pending is not None:
            remote = raw.get("error")
            if kind == MessageType.ERROR and isinstance(remote, _StandIn):
                text = raw.get("traceback")
                problem: BaseException = RemoteError(
                    remote.qualified, remote.text(), text if isinstance(text, str) else ""
                )
            else:
                problem = ProtocolError(f"{self.name}: reply to {pending.what} could not be unpickled here: {error!r}")
                problem.__cause__ = error
            self._settle(pending, error=problem)
        elif kind in REQUEST_TYPES and not (kind == MessageType.SET and not raw.get("ack")):
            problem = ProtocolError(f"{self.name}: request could not be unpickled here: {error!r}")
            self._send_quietly(Error(id=message_id, error=problem))

    def _oversized(self, frame: _Oversized) -> None:
        """A message over our limit was read past: fail the call it answers, or refuse the request."""
        found = _salvage(frame.start)
        ids = found.get("ids", [])
        self._log.warning("message over the size limit skipped", size=frame.size, limit=self._max_bytes, **found)
        problem = f"{frame.size} bytes exceeds the limit of {self._max_bytes} bytes"
        for message_id in ids:
            pending = self._pending.pop(message_id, None)
            if pending is not None:
                self._settle(pending, error=MessageTooLarge(f"{self.name}: reply to {pending.what} of {problem}"))
                return
        # Our peers put the id first; a BOSS peer puts it last (out of reach), and raises on any error reply.
        if ids and self.peer is not None and found.get("type") in REQUEST_TYPES - {MessageType.SET}:
            self._send_quietly(Error(id=ids[0], error=MessageTooLarge(f"{self.name}: request of {problem}")))

    # ----------------------------------------------------------------- serving the peer
    def _lookup(self, name: str) -> Any:
        if self._target is None:
            raise AttributeError(f"{self.name} serves no object, so {name!r} is not available")
        if not (_is_public(name) or name in self._allow):
            raise AttributeError(f"{name!r} is not exposed by {self.name} (only public names are)")
        return getattr(self._target, name)

    def _serve(self, work: Callable[[], None]) -> None:
        """Run a served request: on the user's loop if given, else where the caller chose."""
        self._streaming = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(work)
        elif self._deferred is not None:
            self._deferred.append(work)  # read by a caller: run after the batch, off its thread
        else:
            work()

    def _on_call(self, message: Call) -> None:
        self._running[message.id] = (message, time.monotonic())
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._run_call_on_loop, message)
        else:
            self._batch_calls.append(message)  # started by _hand_over_batch

    def _run_call(self, message: Call) -> None:
        self._reply_call(message, *self._call_outcome(message))

    def _call_outcome(self, message: Call) -> tuple[bool, Any]:
        """Run a served call: (True, its result) or (False, the exception it raised)."""
        try:
            result = self._lookup_callable(message.method)(*message.args, **message.kwargs)
            if type(result) not in _PLAIN and inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
        except Exception as exc:
            return False, exc
        return True, result

    def _reply_call(self, message: Call, returned: bool, outcome: Any) -> None:
        try:
            if returned:
                self._reply_result(message, outcome)
            else:
                self._reply_error(message.id, outcome)
        finally:
            self._running.pop(message.id, None)

    def _run_call_on_loop(self, message: Call) -> None:
        try:
            result = self._lookup_callable(message.method)(*message.args, **message.kwargs)
        except Exception as exc:
            self._running.pop(message.id, None)
            self._reply_error(message.id, exc)
            return
        if type(result) in _PLAIN or not inspect.isawaitable(result):
            self._running.pop(message.id, None)
            self._reply_result(message, result)
            return
        task = asyncio.ensure_future(result)

        def finished(done: asyncio.Future[Any]) -> None:
            self._running.pop(message.id, None)
            if done.cancelled():
                self._reply_error(message.id, SidecarUnavailable(f"call {message.method!r} was cancelled"))
            elif done.exception() is not None:
                self._reply_error(message.id, done.exception())  # type: ignore[arg-type]
            else:
                self._reply_result(message, done.result())

        task.add_done_callback(finished)

    def _lookup_callable(self, name: str) -> Callable[..., Any]:
        member = self._lookup(name)
        if not callable(member):
            raise TypeError(f"{name!r} of {self.name}'s object is not callable")
        return member  # type: ignore[no-any-return]

    def _on_get(self, message: GetAttribute) -> None:
        def work() -> None:
            try:
                value = self._lookup(message.name)
            except Exception as exc:
                if self.peer is None:
                    # A peer that never said hello is BOSS: it raises any error reply inside its receive
                    # loop, which kills it, and BOSS itself answers a get it cannot serve with silence.
                    self._log.warning("attribute read refused", name=message.name, error=str(exc))
                else:
                    self._reply_error(message.id, exc)
            else:
                self._reply_result(message, value)

        self._serve(work)

    def _on_set(self, message: SetAttribute) -> None:
        def work() -> None:
            try:
                current = self._lookup(message.name)  # refuses names that are not exposed
                if inspect.isroutine(current):
                    raise AttributeError(f"{message.name!r} is a method of {self.name}'s object; it cannot be replaced")
                setattr(self._target, message.name, message.value)
            except Exception as exc:
                if message.ack:
                    self._reply_error(message.id, exc)
                else:
                    self._log.warning("attribute write refused", name=message.name, error=str(exc))
            else:
                if message.ack:
                    self._send_quietly(Result(id=message.id, payload=None))

        self._serve(work)

    def _on_event(self, message: Event) -> None:
        def work() -> None:
            try:
                self._lookup_callable(message.method)(*message.args, **message.kwargs)
            except Exception:
                self._log.exception("event handler failed", method=message.method)

        self._serve(work)

    def _on_result(self, message: Result) -> None:
        pending = self._pending.pop(message.id, None)
        if pending is not None:
            self._settle(pending, message.payload)

    def _on_error(self, message: Error) -> None:
        pending = self._pending.pop(message.id, None)
        if pending is None:
            self._log.debug("error reply for no pending request", id=message.id)
            return
        error = message.error
        if message.traceback and not isinstance(error, RemoteError):
            error.add_note(f"--- remote traceback ({self.name}'s peer) ---\n{message.traceback.rstrip()}")
        self._settle(pending, error=error)

    def _on_hello(self, message: Hello) -> None:
        if message.version != PROTOCOL_VERSION:
            self._log.warning("peer speaks another protocol version", peer=message.version, ours=PROTOCOL_VERSION)
        self.peer = message
        self.peer_ready.set()

    def _on_ping(self, message: Ping) -> None:
        self._send_quietly(Pong(id=message.id, sent=message.sent, overdue=self.overdue()))

    def _on_pong(self, message: Pong) -> None:
        self.peer_overdue = message.overdue
        pending = self._pending.pop(message.id, None)
        if pending is not None:
            self._settle(pending, time.monotonic() - message.sent)

    def _on_stop_request(self, message: Stop) -> None:
        handler = self._on_stop
        if handler is None:
            self._send_quietly(Error(id=message.id, error=SidecarError(f"{self.name} does not accept stop requests")))
            return

        def work() -> None:
            try:
                handler(message.reason)
            except Exception as exc:
                self._reply_error(message.id, exc)
            else:
                self._send_quietly(Result(id=message.id, payload=None))
            self.stop_acknowledged.set()

        threading.Thread(target=work, name=f"{self.name}-stop", daemon=True).start()

    def _reply_result(self, request: Call | GetAttribute, value: Any) -> None:
        try:
            self._send_reply(Result(id=request.id, payload=value))
        except (EncodeError, MessageTooLarge) as exc:
            what = self._name_served(request) if isinstance(request, Call) else _describe(request)
            self._reply_error(request.id, type(exc)(f"{self.name}: result of {what}: {exc}"))
        except SidecarError as exc:
            self._log.debug("reply not sent", reason=str(exc))

    def _reply_error(self, message_id: int, error: BaseException) -> None:
        text = "".join(traceback.format_exception(error))
        try:
            self._send_reply(Error(id=message_id, error=portable_error(error), traceback=text))
        except (EncodeError, MessageTooLarge):
            # Too big to travel (a huge message or traceback): send its gist rather than leave the caller waiting.
            kind = type(error)
            gist = RemoteError(f"{kind.__module__}.{kind.__qualname__}", str(error)[:4096], text[-16384:])
            self._send_quietly(Error(id=message_id, error=gist, traceback=gist.traceback))
        except SidecarError as exc:
            self._log.debug("reply not sent", reason=str(exc))


class _Role:
    """Whether a caller's thread still holds the reading role: every way out of its read, an interrupt
    included, must know whether to set the role down or whether the standby has it now."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = True


class _Batch:
    """Calls read together that the reader runs one after another (see Endpoint._run_read_batch), and the
    replies it holds meanwhile. ``take`` is safe from two threads (a deque's popleft is atomic)."""

    __slots__ = ("armed", "calls", "done", "held", "owner", "size")

    def __init__(self, calls: list[Call], owner: int) -> None:
        self.calls = collections.deque(calls)
        self.owner = owner  # the thread ident whose replies are held
        self.held: list[Any] = []  # frame parts of the replies held
        self.size = 0  # their bytes
        self.done = False  # the reader ran them all
        self.armed = False  # the standby reads meanwhile (a slow call, or one waiting on the peer)

    def take(self) -> Call | None:
        try:
            return self.calls.popleft()
        except IndexError:
            return None

    def take_all(self) -> list[Call]:
        taken = []
        while (call := self.take()) is not None:
            taken.append(call)
        return taken


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _timeval(seconds: float) -> bytes:
    """A socket timeout option's value (0 means none, so a positive time is at least a microsecond)."""
    whole = int(seconds)
    micros = int((seconds - whole) * 1_000_000)
    return struct.pack("@ll", whole, micros if whole or micros or not seconds else 1)


def _socket_of(fd: int) -> socket.socket | None:
    """A socket object sharing the connection's socket, or None when it is no socket (an os.pipe)."""
    duplicate = os.dup(fd)
    try:
        sock = socket.socket(fileno=duplicate)
    except OSError:
        os.close(duplicate)
        return None
    sock.settimeout(None)
    return sock
