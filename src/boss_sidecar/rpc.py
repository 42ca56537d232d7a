"""The symmetric RPC endpoint: serves an object to the peer and calls the peer's object.

``Endpoint`` is a facade over parts that each hold one idea:

- ``_writer``: the outbox every message goes through, backpressure, batched writes;
- ``_requests``: requests awaiting replies, by id; settling them for sync and async callers;
- ``_serving``: looking up what the peer asks for, running calls, answering, overdue reports;
- ``_inbound``: decoding and routing each message read, salvaging what does not decode;
- ``_role``: the reading role, as named states: one thread at a time reads the channel;
- ``_caller_reading`` / ``_server_reading``: who reads, on the side that mostly calls (a caller reads its
  own reply) or mostly serves (a reader runs each call it reads). Every hand-off from one thread to
  another costs a wake-up, so each side keeps them off its common path.

Sync and async callers share one core: a request is a ``_Pending`` registered by id; ``call``
blocks on it (or reads for it), ``acall`` awaits it.

The bytes on the wire are exactly ``Connection.send_bytes`` framing (a ``!i`` length, or -1 and a
``!Q`` length, then the pickle), so a BOSS peer using ``Connection.send``/``recv`` reads them. The
endpoint does its own framing on the connection's file descriptor for speed: the reader takes
every message that has arrived with one system call (``_framing``).

A reader about to sleep waiting for the peer's next message first polls for it for ``busy_wait``
seconds (100 microseconds by default) when it waits alone: the lone sync caller, the lone async
caller on its loop thread, the worker's reader after a request that came by itself. On virtual
machines a sleeping thread wakes tens of microseconds late, longer than a reply takes to come.
After a poll that found nothing the next waits sleep at once, more of them after each further miss
(see ``_spin``): on a machine whose cores are all busy, polling holds the core the peer needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

from boss_sidecar._caller_reading import _CallerReading
from boss_sidecar._framing import _FrameReader
from boss_sidecar._inbound import _Inbound
from boss_sidecar._pending import _Expired, _Pending
from boss_sidecar._pickling import _encode, portable_error
from boss_sidecar._pool import _Pool
from boss_sidecar._reading import _Reading
from boss_sidecar._requests import _Requests
from boss_sidecar._role import ReadingRole
from boss_sidecar._server_reading import _ServerReading
from boss_sidecar._serving import _Server
from boss_sidecar._spin import _SpinBudget
from boss_sidecar._standby import _Standby
from boss_sidecar._writer import _Writer
from boss_sidecar.errors import CallTimeout, SidecarCrashed, SidecarError, SidecarUnavailable
from boss_sidecar.logs import get_logger
from boss_sidecar.protocol import (
    PROTOCOL_VERSION,
    Call,
    Event,
    GetAttribute,
    Hello,
    Message,
    Ping,
    SetAttribute,
    Stop,
    new_id,
)

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0
DEFAULT_SEND_TIMEOUT = 30.0
DEFAULT_MAX_BACKLOG_BYTES = 64 * 1024 * 1024
DEFAULT_BUSY_WAIT = 100e-6
MAX_BUSY_WAIT = 0.01  # longer polling only burns CPU: a wake from sleep costs far less than this

_log = get_logger("boss_sidecar.rpc")

_SETTLING_GRACE = 5.0  # a reply being delivered as the caller times out arrives within this

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_SEND_TIMEOUT", "DEFAULT_TIMEOUT", "Endpoint", "portable_error"]


class Endpoint:
    """One end of a channel: serves ``target`` to the peer and calls the peer.

    ``allow`` adds names beyond the public ones (``_private`` and dunders are refused otherwise).
    With ``loop`` set, everything served runs on that event loop, in order (BOSS's semantics);
    otherwise calls run in a thread pool and attribute access and events on the reader thread.
    ``on_stop`` handles the peer's stop request; ``on_close`` runs once when the channel ends.
    ``describe`` names a served call in overdue reports and result errors when the target knows better than its
    method name (a dispatcher such as the worker's ``call_object``); None falls back to that. ``dispatch``
    resolves a served call to what runs it, or None to look its method up on ``target`` (the worker resolves a
    call to a hosted object straight to the object's method, so the call is dispatched once).
    ``callers_read`` suits the side that mostly calls: a sync caller reads its own reply. Work for the peer
    never runs on a caller's thread (it may hold locks that work needs). False suits the side that mostly
    serves: a reader runs each call it reads. None (the default) chooses by ``target``: an endpoint that
    serves an object reads as the serving side, one that serves nothing as the calling side; so both ends
    built with default arguments are fast. Without epoll (not Linux) a reader always waits on the channel.
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
        dispatch: Callable[[Call], Callable[[], Any] | None] | None = None,
        max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
        callers_read: bool | None = None,
        busy_wait: float = DEFAULT_BUSY_WAIT,
        start: bool = True,
    ) -> None:
        if not 0 <= busy_wait <= MAX_BUSY_WAIT:
            raise ValueError(f"busy_wait must be between 0 and {MAX_BUSY_WAIT:g} seconds, got {busy_wait!r}")
        self.name = name
        self._connection = connection
        self._fd = connection.fileno()
        self._socket = _socket_of(self._fd)
        self._on_close = on_close
        self._max_bytes = max_message_bytes
        self._default_timeout = default_timeout
        self._log = _log.bind(endpoint=name)
        self.peer: Hello | None = None
        self.peer_overdue: list[str] = []
        """What the peer's last pong reported as overdue: calls running long after their timeout."""
        self.peer_ready = threading.Event()
        self.stop_acknowledged = threading.Event()
        self.closed = threading.Event()
        self._role = ReadingRole(name)
        self._writer = _Writer(
            self._fd,
            self._socket,
            name,
            send_timeout=send_timeout,
            max_backlog=max_backlog_bytes,
            is_reader=self._role.reads_here,
            broken=self._broken,
        )
        self._requests = _Requests(self._writer)
        # One more thread than max_workers: the one reading (see _ServerReading).
        self._pool = _Pool(max_workers + 1, f"{name}-serve")
        self._server = _Server(
            self,
            target,
            self._writer,
            self._pool,
            allow=allow,
            loop=loop,
            on_stop=on_stop,
            describe=describe,
            dispatch=dispatch,
            overdue_grace=overdue_grace,
            max_bytes=max_message_bytes,
        )
        inbound = _Inbound(self, self._requests, self._server, max_message_bytes)
        if callers_read is None:
            callers_read = target is None
        strategy = _CallerReading if callers_read and _Standby.SUPPORTED else _ServerReading
        self._reading: _Reading = strategy(
            self,
            role=self._role,
            requests=self._requests,
            server=self._server,
            inbound=inbound,
            writer=self._writer,
            pool=self._pool,
            spin=_SpinBudget(busy_wait),
        )
        self._started = False
        self._read_over = threading.Event()  # set once the reading role ended with the channel
        self._release_wanted = False  # close() could not release the channel: the last reader does
        self._released = False
        if start:
            self.start()

    # ----------------------------------------------------------------- lifecycle
    @property
    def _standby(self) -> _Standby | None:
        return self._reading.standby

    def start(self) -> None:
        """Start reading and greet the peer (a BOSS peer ignores the greeting)."""
        self._started = True
        frames = _FrameReader(self._fd, self._max_bytes)
        # The role is held (HANDED) until the reading starts: the standby may wake at once (a hang-up).
        standby = _Standby(self._fd, self._reading.take_over, self.name) if _Standby.SUPPORTED else None
        self._reading.start(frames, standby)
        with contextlib.suppress(SidecarError):
            self._send(Hello(id=new_id(), version=PROTOCOL_VERSION, pid=os.getpid(), name=self.name))

    @property
    def is_closed(self) -> bool:
        return self._requests.closed is not None

    @property
    def pending_count(self) -> int:
        return len(self._requests.table)

    @property
    def running_count(self) -> int:
        """Served calls running (or queued) now; a call leaves before its answer is sent."""
        return len(self._server.running)

    def close(self, reason: str = "endpoint closed") -> None:
        """Close the channel, fail pending calls with SidecarUnavailable; safe to call twice."""
        self._mark_closed(SidecarUnavailable(f"{self.name}: {reason}"))
        self._wake_reader()
        if self._started and not self._role.reads_here():
            self._read_over.wait(timeout=1.0)
        if any(self._reading.is_reading_job(job) for job, _ in self._pool.shutdown()):
            self._role.end()  # the reading role was handed on but not yet taken up: no one reads
            self._read_over.set()
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
            self._requests.raise_if_closed()
        assert self.peer is not None
        return self.peer

    def abandon(self) -> None:
        """In a forked child: let go of the parent's channel without shutting it down for the parent."""
        self._mark_closed(SidecarUnavailable(f"{self.name}: belongs to the parent process"))
        self._release_channel()

    def overdue(self) -> list[str]:
        """Served calls running (or queued) well past the timeout their caller gave them."""
        return self._server.overdue()

    def _mark_closed(self, error: SidecarError) -> bool:
        if not self._requests.close(error):
            return False
        self.closed.set()
        self.peer_ready.set()  # wake wait_peer
        if self._on_close is not None:
            try:
                self._on_close(error)
            except Exception:
                self._log.exception("on_close handler failed")
        return True

    def _broken(self, problem: SidecarCrashed) -> None:
        """A write failed: the channel is dead."""
        self._mark_closed(problem)
        self._wake_reader()

    def _channel_ended(self, reason: str) -> None:
        """The reader saw the channel end (the role ended, see _Reading.channel_ended): fail what waits."""
        if self._mark_closed(SidecarCrashed(f"{self.name}: {reason}")):
            self._log.info("channel closed", reason=reason)
        self._stop_standby()
        self._read_over.set()
        if self._release_wanted:
            self._release_channel()

    def _release_channel(self) -> None:
        """Close our file descriptors (without shutting the socket down for other holders); once."""
        with self._requests.lock:
            if self._released:
                return
            self._released = True
        self._stop_standby()
        with contextlib.suppress(OSError):
            if self._socket is not None:
                self._socket.close()
            self._connection.close()

    def _stop_standby(self) -> None:
        if self._reading.standby is not None:
            self._reading.standby.stop()

    def _wake_reader(self) -> None:
        """Unblock the reader: shutting a socket down wakes a thread blocked reading it."""
        with contextlib.suppress(OSError, ValueError):
            if self._socket is not None:
                self._socket.shutdown(socket.SHUT_RDWR)

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

    # ----------------------------------------------------------------- one round trip
    def _timeout(self, timeout: float | None) -> float | None:
        """Seconds to wait, or None for no limit (infinity, or more than a lock wait can take)."""
        value = self._default_timeout if timeout is None else timeout
        return None if value > threading.TIMEOUT_MAX else value

    def _send(self, message: Message) -> None:
        self._writer.send(*_encode(message, self.name, self._max_bytes))

    def _begin(self, message: Message, loop: asyncio.AbstractEventLoop | None = None) -> _Pending:
        """Register the request and send it; the send never waits on the channel, so deadlines hold. The
        caller calls ``_cut_short`` if anything raises from here on (see there)."""
        parts, size = _encode(message, self.name, self._max_bytes)
        pending = self._requests.register(message, loop)
        self._writer.send(parts, size, loop)
        if self._writer.holding:
            self._reading.out_of_batch()
        return pending

    def _cut_short(self, message: Message) -> None:
        """A call on this thread raised before it was settled: an interrupt (Ctrl-C, or any exception a signal
        handler raises, at any point), or a failed send. Forget the request and give back what this thread still
        holds of the reading (the writer sees to its own), so the channel goes on for everyone else."""
        self._requests.table.pop(message.id, None)
        self._reading.recover()

    def _round_trip(self, message: Message, seconds: float | None) -> Any:
        """Send a request and block for its outcome, reading the channel for it if no one else is."""
        try:
            pending = self._begin(message)
            settled = self._reading.wait(pending, seconds)
        except BaseException:
            self._cut_short(message)
            raise
        if not settled:
            if self._requests.table.pop(message.id, None) is not None:
                raise CallTimeout(f"{self.name}: {pending.what} got no answer within {seconds:g}s")
            # The reader (or close) took it just now and is settling it: the outcome is a moment away.
            if not pending.wait(_SETTLING_GRACE):
                raise CallTimeout(f"{self.name}: {pending.what} got no answer within {seconds:g}s")
        return pending.outcome()

    async def _async_round_trip(self, message: Message, seconds: float | None) -> Any:
        """Send a request and await its outcome; the reader hands it to this loop."""
        loop = asyncio.get_running_loop()
        requests = self._requests
        counted = False
        try:
            pending = self._begin(message, loop)
            future = pending.future
            if seconds is not None:
                requests.deadlines_of(loop).add(seconds, message.id, future)
            with requests.lock:
                requests.awaited += 1
                counted = True  # no point between the two where a signal handler runs
            self._reading.awaiting(pending, loop, seconds)
        except BaseException:
            self._cut_short(message)
            if counted:
                with requests.lock:
                    requests.awaited -= 1
            raise
        try:
            return await future
        except _Expired:
            requests.table.pop(message.id, None)
            raise CallTimeout(f"{self.name}: {pending.what} got no answer within {seconds:g}s") from None
        except asyncio.CancelledError:
            requests.table.pop(message.id, None)
            raise
        finally:
            with requests.lock:
                requests.awaited -= 1


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
