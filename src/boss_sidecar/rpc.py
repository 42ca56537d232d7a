"""The symmetric RPC endpoint: serves an object to the peer and calls the peer's object.

One reader thread blocks on the connection (event-driven, no polling) and routes each message:
replies settle the waiting caller's future by id, heartbeats are answered at once, one-way events
and attribute access run in arrival order on the reader, and calls run in a thread pool so a slow
method never holds up other requests or heartbeats. Sync and async callers share one core: a
request is a ``concurrent.futures.Future``; ``acall`` only awaits it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import math
import os
import pickle
import pickletools
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

import structlog

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

_log = structlog.get_logger("boss_sidecar.rpc")


class _Pending(concurrent.futures.Future[Any]):
    """A request waiting for its reply; ``what`` names it in error messages."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what


def _settle(future: concurrent.futures.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Resolve a future unless it was already resolved or cancelled (a timed-out caller)."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _dumps(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _travels(exc: BaseException) -> bool:
    """Whether an exception survives a pickle round trip (many custom ones do not)."""
    try:
        pickle.loads(_dumps(exc))
    except Exception:
        return False
    return True


def portable_error(exc: BaseException) -> BaseException:
    """The exception itself if it can travel, else a RemoteError that carries its text."""
    if _travels(exc):
        return exc
    kind = type(exc)
    return RemoteError(f"{kind.__module__}.{kind.__qualname__}", str(exc), "".join(traceback.format_exception(exc)))


def _salvage(data: bytes) -> dict[str, Any]:
    """Read id, type and traceback out of a pickle that failed to load, so its call is not lost."""
    found: dict[str, Any] = {}
    key: object = None
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            if opcode.name in {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"}:
                continue
            if key == "id" and isinstance(arg, int) and not isinstance(arg, bool):
                found.setdefault("ids", []).append(arg)
            elif key in ("type", "traceback") and isinstance(arg, str):
                found[key] = arg
            key = arg if isinstance(arg, str) else None
    except Exception:  # garbage stops the scan; what was found so far still helps
        pass
    return found


def _is_public(name: str) -> bool:
    return name.isidentifier() and not name.startswith("_")


class Endpoint:
    """One end of a channel: serves ``target`` to the peer and calls the peer.

    ``allow`` adds names beyond the public ones (``_private`` and dunders are refused otherwise).
    With ``loop`` set, everything served runs on that event loop, in order (BOSS's semantics);
    otherwise calls run in a thread pool and attribute access and events on the reader thread.
    ``on_stop`` handles the peer's stop request; ``on_close`` runs once when the channel ends.
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
        start: bool = True,
    ) -> None:
        self.name = name
        self._connection = connection
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
        self._send_lock = threading.Lock()
        self._send_timeout = send_timeout
        self._closed: SidecarError | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix=f"{name}-serve")
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-reader", daemon=True)
        self.peer: Hello | None = None
        self.peer_overdue: list[str] = []
        """What the peer's last pong reported as overdue: calls running long after their timeout."""
        self._running: dict[int, tuple[str, float, float | None]] = {}
        self._overdue_grace = overdue_grace
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
    def start(self) -> None:
        """Start reading and greet the peer (a BOSS peer ignores the greeting)."""
        self._reader.start()
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
        if threading.current_thread() is not self._reader and self._reader.is_alive():
            self._reader.join(timeout=1.0)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if not self._reader.is_alive():
            with contextlib.suppress(OSError):
                self._connection.close()

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
        with contextlib.suppress(OSError):
            self._connection.close()

    def overdue(self) -> list[str]:
        """Served calls running (or queued) well past the timeout their caller gave them."""
        now = time.monotonic()
        return [
            f"{what} running {now - started:.1f}s, past its {timeout:g}s timeout"
            for what, started, timeout in list(self._running.values())
            if timeout is not None and now - started > timeout + self._overdue_grace
        ]

    def _mark_closed(self, error: SidecarError) -> bool:
        with self._lock:
            if self._closed is not None:
                return False
            self._closed = error
            pending, self._pending = self._pending, {}
        for future in pending.values():
            _settle(future, error=type(error)(f"{error} (during {future.what})"))
        self.closed.set()
        self.peer_ready.set()  # wake wait_peer
        if self._on_close is not None:
            try:
                self._on_close(error)
            except Exception:
                self._log.exception("on_close handler failed")
        return True

    def _wake_reader(self) -> None:
        """Unblock the reader: shutting a socket down wakes a thread blocked reading it."""
        with contextlib.suppress(OSError, ValueError):
            sock = socket.socket(fileno=os.dup(self._connection.fileno()))
            with sock:
                sock.shutdown(socket.SHUT_RDWR)

    def _bound_send_timeout(self) -> None:
        """Bound a blocked write (peer stopped reading) so no sender waits forever."""
        with contextlib.suppress(OSError, ValueError):
            sock = socket.socket(fileno=os.dup(self._connection.fileno()))
            with sock:
                sock.settimeout(None)
                seconds = int(self._send_timeout)
                micros = int((self._send_timeout - seconds) * 1_000_000)
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_SNDTIMEO, seconds.to_bytes(8, "little") + micros.to_bytes(8, "little")
                )

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
        message = Call(
            id=new_id(), method=method, args=tuple(args), kwargs=kwargs or {}, timeout=self._timeout(timeout)
        )
        return self._wait(message.id, self._begin(message, f"call {method!r}", timeout), timeout)

    def get_attribute(self, name: str, timeout: float | None = None) -> Any:
        """Read attribute ``name`` of the peer's object."""
        message = GetAttribute(id=new_id(), name=name)
        return self._wait(message.id, self._begin(message, f"get {name!r}", timeout), timeout)

    def set_attribute(self, name: str, value: Any, timeout: float | None = None) -> None:
        """Write attribute ``name`` of the peer's object and wait for its acknowledgement."""
        message = SetAttribute(id=new_id(), name=name, value=value, ack=True)
        self._wait(message.id, self._begin(message, f"set {name!r}", timeout), timeout)

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
        message = Call(
            id=new_id(), method=method, args=tuple(args), kwargs=kwargs or {}, timeout=self._timeout(timeout)
        )
        return await self._await(message.id, self._begin(message, f"call {method!r}", timeout), timeout)

    async def aget_attribute(self, name: str, timeout: float | None = None) -> Any:
        """Awaitable ``get_attribute``."""
        message = GetAttribute(id=new_id(), name=name)
        return await self._await(message.id, self._begin(message, f"get {name!r}", timeout), timeout)

    async def aset_attribute(self, name: str, value: Any, timeout: float | None = None) -> None:
        """Awaitable ``set_attribute``."""
        message = SetAttribute(id=new_id(), name=name, value=value, ack=True)
        await self._await(message.id, self._begin(message, f"set {name!r}", timeout), timeout)

    def notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        """One-way call: the peer runs ``method`` in arrival order; no reply, errors logged there."""
        self._send(Event(id=new_id(), method=method, args=args, kwargs=kwargs))

    def set_attribute_nowait(self, name: str, value: Any) -> None:
        """BOSS's one-way attribute write: no acknowledgement."""
        self._send(SetAttribute(id=new_id(), name=name, value=value))

    def ping(self, timeout: float | None = None) -> float:
        """Heartbeat: the round trip in seconds, answered by the peer's reader thread."""
        message = Ping(id=new_id(), sent=time.monotonic())
        return float(self._wait(message.id, self._begin(message, "ping", timeout), timeout))

    def request_stop(self, reason: str = "stop requested", timeout: float | None = None) -> None:
        """Ask the peer to release what it holds and exit; returns when it acknowledged."""
        message = Stop(id=new_id(), reason=reason)
        self._wait(message.id, self._begin(message, "stop", timeout), timeout)

    # ----------------------------------------------------------------- the shared core
    def _timeout(self, timeout: float | None) -> float | None:
        value = self._default_timeout if timeout is None else timeout
        return None if math.isinf(value) else value

    def _begin(self, message: Message, what: str, timeout: float | None = None) -> _Pending:
        data = self._encode(message, what)
        future = _Pending(what)
        with self._lock:
            self._raise_if_closed()
            self._pending[message.id] = future
        try:
            self._send_bytes(data, self._timeout(timeout))
        except BaseException:
            self._pending.pop(message.id, None)
            raise
        return future

    def _wait(self, message_id: int, future: _Pending, timeout: float | None) -> Any:
        seconds = self._timeout(timeout)
        try:
            return future.result(seconds)
        except TimeoutError:
            if future.done():
                raise  # the remote side raised a TimeoutError of its own
            self._pending.pop(message_id, None)
            raise CallTimeout(f"{self.name}: {future.what} got no answer within {seconds:g}s") from None

    async def _await(self, message_id: int, future: _Pending, timeout: float | None) -> Any:
        seconds = self._timeout(timeout)
        wrapped = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait({wrapped}, timeout=seconds)
        except asyncio.CancelledError:
            self._pending.pop(message_id, None)
            wrapped.cancel()
            raise
        if not done:
            self._pending.pop(message_id, None)
            wrapped.cancel()
            raise CallTimeout(f"{self.name}: {future.what} got no answer within {seconds:g}s")
        return wrapped.result()

    def _encode(self, message: Message, what: str) -> bytes:
        try:
            data = _dumps(message.to_wire())
        except Exception as exc:
            raise EncodeError(f"{self.name}: {what}: {_which_unpicklable(message)} cannot be pickled: {exc}") from exc
        if len(data) > self._max_bytes:
            raise MessageTooLarge(
                f"{self.name}: {what}: message of {len(data)} bytes exceeds the limit of {self._max_bytes} bytes"
            )
        return data

    def _send(self, message: Message) -> None:
        self._send_bytes(self._encode(message, str(message.TYPE)))

    def _send_bytes(self, data: bytes, timeout: float | None = None) -> None:
        self._raise_if_closed()
        wait = self._send_timeout if timeout is None else min(timeout, self._send_timeout)
        if not self._send_lock.acquire(timeout=wait):
            raise CallTimeout(f"{self.name}: channel busy: no send slot within {wait:g}s")
        try:
            self._connection.send_bytes(data)
        except (OSError, ValueError) as exc:
            # A partial write (send timeout) corrupts the framing: the channel is dead either way.
            self._mark_closed(SidecarCrashed(f"{self.name}: channel broken while sending: {exc}"))
            self._wake_reader()
            raise SidecarCrashed(f"{self.name}: channel broken while sending: {exc}") from exc
        finally:
            self._send_lock.release()

    def _send_quietly(self, message: Message) -> None:
        """Send a reply; if the channel is gone there is no one left to tell."""
        try:
            self._send(message)
        except SidecarError as exc:
            self._log.debug("reply not sent", reason=str(exc))

    # ----------------------------------------------------------------- reading
    def _read_loop(self) -> None:
        reason = "peer closed the channel"
        try:
            while True:
                try:
                    data = self._connection.recv_bytes(self._max_bytes)
                except EOFError:
                    break
                except (OSError, ValueError) as exc:
                    reason = f"channel failed while reading: {exc}"
                    break
                self._handle_bytes(data)
        finally:
            if self._mark_closed(SidecarCrashed(f"{self.name}: {reason}")):
                self._log.info("channel closed", reason=reason)

    def _handle_bytes(self, data: bytes) -> None:
        try:
            raw = pickle.loads(data)
        except Exception as exc:
            self._undecodable(data, exc)
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
        future = self._pending.pop(message_id, None) if kind in (MessageType.RESULT, MessageType.ERROR) else None
        if future is not None:
            _settle(future, error=ProtocolError(f"{self.name}: malformed reply to {future.what}: {error}"))
        elif kind in REQUEST_TYPES and not (kind == MessageType.SET and not raw.get("ack")):  # type: ignore[attr-defined]  # kind set means raw is a dict
            self._send_quietly(Error(id=message_id, error=error))

    def _undecodable(self, data: bytes, error: Exception) -> None:
        found = _salvage(data)
        self._log.warning("message could not be unpickled", error=repr(error), size=len(data), **found)
        for message_id in found.get("ids", []):
            future = self._pending.pop(message_id, None)
            if future is not None:
                remote = found.get("traceback", "")
                _settle(
                    future,
                    error=RemoteError(
                        "boss_sidecar.ProtocolError",
                        f"reply to {future.what} could not be unpickled: {error!r}",
                        remote,
                    ),
                )
                return
        if found.get("type") in REQUEST_TYPES - {MessageType.SET} and found.get("ids"):
            problem = ProtocolError(f"{self.name}: request could not be unpickled: {error!r}")
            self._send_quietly(Error(id=found["ids"][-1], error=problem))

    # ----------------------------------------------------------------- serving the peer
    def _lookup(self, name: str) -> Any:
        if self._target is None:
            raise AttributeError(f"{self.name} serves no object, so {name!r} is not available")
        if not (_is_public(name) or name in self._allow):
            raise AttributeError(f"{name!r} is not exposed by {self.name} (only public names are)")
        return getattr(self._target, name)

    def _serve(self, work: Callable[[], None]) -> None:
        """Run a served request: on the user's loop if given, else where the caller chose."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(work)
        else:
            work()

    def _on_call(self, message: Call) -> None:
        self._running[message.id] = (f"call {message.method!r}", time.monotonic(), message.timeout)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._run_call_on_loop, message)
            return
        try:
            self._executor.submit(self._run_call, message)
        except RuntimeError:  # executor shut down: we are closing
            self._send_quietly(Error(id=message.id, error=SidecarUnavailable(f"{self.name} is closing")))

    def _run_call(self, message: Call) -> None:
        try:
            result = self._lookup_callable(message.method)(*message.args, **message.kwargs)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
        except Exception as exc:
            self._reply_error(message.id, exc)
        else:
            self._reply_result(message.id, result, f"call {message.method!r}")
        finally:
            self._running.pop(message.id, None)

    def _run_call_on_loop(self, message: Call) -> None:
        try:
            result = self._lookup_callable(message.method)(*message.args, **message.kwargs)
        except Exception as exc:
            self._running.pop(message.id, None)
            self._reply_error(message.id, exc)
            return
        if not inspect.isawaitable(result):
            self._running.pop(message.id, None)
            self._reply_result(message.id, result, f"call {message.method!r}")
            return
        task = asyncio.ensure_future(result)

        def finished(done: asyncio.Future[Any]) -> None:
            self._running.pop(message.id, None)
            if done.cancelled():
                self._reply_error(message.id, SidecarUnavailable(f"call {message.method!r} was cancelled"))
            elif done.exception() is not None:
                self._reply_error(message.id, done.exception())  # type: ignore[arg-type]
            else:
                self._reply_result(message.id, done.result(), f"call {message.method!r}")

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
                self._reply_error(message.id, exc)
            else:
                self._reply_result(message.id, value, f"get {message.name!r}")

        self._serve(work)

    def _on_set(self, message: SetAttribute) -> None:
        def work() -> None:
            try:
                self._lookup(message.name)  # refuses names that are not exposed
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
        future = self._pending.pop(message.id, None)
        if future is not None:
            _settle(future, result=message.payload)

    def _on_error(self, message: Error) -> None:
        future = self._pending.pop(message.id, None)
        if future is None:
            self._log.debug("error reply for no pending request", id=message.id)
            return
        error = message.error
        if message.traceback and not isinstance(error, RemoteError):
            error.add_note(f"--- remote traceback ({self.name}'s peer) ---\n{message.traceback.rstrip()}")
        _settle(future, error=error)

    def _on_hello(self, message: Hello) -> None:
        if message.version != PROTOCOL_VERSION:
            self._log.warning("peer speaks another protocol version", peer=message.version, ours=PROTOCOL_VERSION)
        self.peer = message
        self.peer_ready.set()

    def _on_ping(self, message: Ping) -> None:
        self._send_quietly(Pong(id=message.id, sent=message.sent, overdue=self.overdue()))

    def _on_pong(self, message: Pong) -> None:
        self.peer_overdue = message.overdue
        future = self._pending.pop(message.id, None)
        if future is not None:
            _settle(future, result=time.monotonic() - message.sent)

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

    def _reply_result(self, message_id: int, value: Any, what: str) -> None:
        try:
            self._send(Result(id=message_id, payload=value))
        except (EncodeError, MessageTooLarge) as exc:
            self._reply_error(message_id, type(exc)(f"{self.name}: result of {what}: {exc}"))
        except SidecarError as exc:
            self._log.debug("reply not sent", reason=str(exc))

    def _reply_error(self, message_id: int, error: BaseException) -> None:
        text = "".join(traceback.format_exception(error))
        self._send_quietly(Error(id=message_id, error=portable_error(error), traceback=text))


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _which_unpicklable(message: Message) -> str:
    """Name the first part of a message that does not pickle, for a clear error."""
    parts: list[tuple[str, object]] = []
    if isinstance(message, Call | Event):
        parts = [(f"argument {index}", value) for index, value in enumerate(message.args)]
        parts += [(f"keyword argument {key!r}", value) for key, value in message.kwargs.items()]
    elif isinstance(message, SetAttribute):
        parts = [(f"value for {message.name!r}", message.value)]
    elif isinstance(message, Result):
        parts = [("result", message.payload)]
    elif isinstance(message, Error):
        parts = [("error", message.error)]
    for label, value in parts:
        try:
            _dumps(value)
        except Exception:
            return f"{label} ({type(value).__name__})"
    return "the message"
