"""Serving the peer: looking up what it asks for, running calls, answering, and overdue reports.

Kept apart from ``rpc``: this is what an endpoint does with a request once it was read. Where the work
runs is chosen here (``serve``): on the user's loop if given, after the batch if a caller read it (never
on the caller's thread), else on the reader. Calls are kept in ``calls`` until the reader decides which
thread runs them (see _server_reading); a call leaves the running calls before its answer is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from boss_sidecar._pending import _describe
from boss_sidecar._pickling import _encode, portable_error
from boss_sidecar._pool import _Pool
from boss_sidecar._writer import _Writer
from boss_sidecar.errors import EncodeError, MessageTooLarge, RemoteError, SidecarError, SidecarUnavailable
from boss_sidecar.protocol import Call, Error, Event, GetAttribute, Message, Result, SetAttribute, Stop

if TYPE_CHECKING:
    from boss_sidecar.rpc import Endpoint

_PLAIN = frozenset({type(None), bool, int, float, str, bytes, tuple, list, dict})  # results never awaitable


def _is_public(name: str) -> bool:
    return name.isidentifier() and not name.startswith("_")


class _Server:
    """Serves ``target`` to the peer of ``endpoint`` (see Endpoint for the options)."""

    def __init__(
        self,
        endpoint: Endpoint,
        target: object,
        writer: _Writer,
        pool: _Pool,
        *,
        allow: Iterable[str],
        loop: asyncio.AbstractEventLoop | None,
        on_stop: Callable[[str], None] | None,
        describe: Callable[[Call], str | None] | None,
        dispatch: Callable[[Call], Callable[[], Any] | None] | None,
        overdue_grace: float,
        max_bytes: int,
    ) -> None:
        self._endpoint = endpoint
        self._name = endpoint.name
        self._target = target
        self._writer = writer
        self._pool = pool
        self._allow = frozenset(allow)
        self._loop = loop
        self._on_stop = on_stop
        self._describe_call = describe
        self._dispatch = dispatch
        self._overdue_grace = overdue_grace
        self._max_bytes = max_bytes
        self.running: dict[int, tuple[Call, float]] = {}  # served calls and when they arrived
        self.calls: list[Call] = []  # calls of the batch being read, for the reader to start
        self.deferred: list[Callable[[], None]] | None = None  # work read by a caller, to run after its batch
        self.streaming = False  # work for the peer was read since the reader last looked (see _CallerReading)

    # ----------------------------------------------------------------- reports
    def overdue(self) -> list[str]:
        """Served calls running (or queued) well past the timeout their caller gave them."""
        now = time.monotonic()
        return [
            f"{self.name_served(call)} running {now - started:.1f}s, past its {call.timeout:g}s timeout"
            for call, started in list(self.running.values())
            if call.timeout is not None and now - started > call.timeout + self._overdue_grace
        ]

    def name_served(self, call: Call) -> str:
        if self._describe_call is not None:
            with contextlib.suppress(Exception):  # a report must not fail because a name could not be made
                named = self._describe_call(call)
                if named:
                    return named
        return _describe(call)

    # ----------------------------------------------------------------- requests as they are read
    def serve(self, work: Callable[[], None]) -> None:
        """Run a served request: on the user's loop if given, else where the reader chose."""
        self.streaming = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(work)
        elif self.deferred is not None:
            self.deferred.append(work)  # read by a caller: run after the batch, off its thread
        else:
            work()

    def on_call(self, message: Call) -> None:
        self.running[message.id] = (message, time.monotonic())
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._run_call_on_loop, message)
        else:
            self.calls.append(message)  # started by the reader (see _Reading.hand_over_batch)

    def on_get(self, message: GetAttribute) -> None:
        def work() -> None:
            try:
                value = self._lookup(message.name)
            except BaseException as exc:
                exc = _answerable(exc)
                if self._endpoint.peer is None:
                    # A peer that never said hello is BOSS: it raises any error reply inside its receive
                    # loop, which kills it, and BOSS itself answers a get it cannot serve with silence.
                    self._endpoint._log.warning("attribute read refused", name=message.name, error=str(exc))
                else:
                    self.reply_error(message.id, exc)
            else:
                self.reply_result(message, value)

        self.serve(work)

    def on_set(self, message: SetAttribute) -> None:
        def work() -> None:
            try:
                current = self._lookup(message.name)  # refuses names that are not exposed
                if inspect.isroutine(current):
                    raise AttributeError(
                        f"{message.name!r} is a method of {self._name}'s object; it cannot be replaced"
                    )
                setattr(self._target, message.name, message.value)
            except BaseException as exc:
                exc = _answerable(exc)
                if message.ack:
                    self.reply_error(message.id, exc)
                else:
                    self._endpoint._log.warning("attribute write refused", name=message.name, error=str(exc))
            else:
                if message.ack:
                    self.send_quietly(Result(id=message.id, payload=None))

        self.serve(work)

    def on_event(self, message: Event) -> None:
        def work() -> None:
            try:
                self._lookup_callable(message.method)(*message.args, **message.kwargs)
            except BaseException:  # SystemExit and the like too: the reader goes on reading
                self._endpoint._log.exception("event handler failed", method=message.method)

        self.serve(work)

    def on_stop_request(self, message: Stop) -> None:
        handler = self._on_stop
        if handler is None:
            self.send_quietly(Error(id=message.id, error=SidecarError(f"{self._name} does not accept stop requests")))
            return

        def work() -> None:
            try:
                handler(message.reason)
            except Exception as exc:
                self.reply_error(message.id, exc)
            else:
                self.send_quietly(Result(id=message.id, payload=None))
            self._endpoint.stop_acknowledged.set()

        threading.Thread(target=work, name=f"{self._name}-stop", daemon=True).start()

    # ----------------------------------------------------------------- running calls
    def start_calls(self, calls: list[Call]) -> None:
        """Calls read where they may not run (a caller's thread, the standby, closing): to the pool."""
        for call in calls:
            self.start_call(call)

    def start_call(self, message: Call) -> None:
        """Run a served call on a pool thread."""
        try:
            self._pool.submit(self.run_call, message)
        except RuntimeError:  # pool shut down: we are closing
            self.send_quietly(Error(id=message.id, error=SidecarUnavailable(f"{self._name} is closing")))

    def run_call(self, message: Call) -> None:
        self.reply_call(message, *self.call_outcome(message))

    def call_outcome(self, message: Call) -> tuple[bool, Any]:
        """Run a served call: (True, its result) or (False, the exception it raised).

        Any exception, ``SystemExit`` and ``KeyboardInterrupt`` included: the caller gets an answer at
        once (see _answerable) and the thread that ran the call goes on serving."""
        try:
            result = self._invoke(message)
            if type(result) not in _PLAIN and inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
        except BaseException as exc:
            return False, _answerable(exc)
        return True, result

    def reply_call(self, message: Call, returned: bool, outcome: Any) -> None:
        """Answer a served call; it leaves the running calls first, so an answered call is never overdue."""
        self.running.pop(message.id, None)
        if returned:
            self.reply_result(message, outcome)
        else:
            self.reply_error(message.id, outcome)

    def _run_call_on_loop(self, message: Call) -> None:
        try:
            result = self._invoke(message)
        except BaseException as exc:
            self.running.pop(message.id, None)
            self.reply_error(message.id, _answerable(exc))
            return
        if type(result) in _PLAIN or not inspect.isawaitable(result):
            self.running.pop(message.id, None)
            self.reply_result(message, result)
            return
        task = asyncio.ensure_future(result)

        def finished(done: asyncio.Future[Any]) -> None:
            self.running.pop(message.id, None)
            if done.cancelled():
                self.reply_error(message.id, SidecarUnavailable(f"call {message.method!r} was cancelled"))
            elif (error := done.exception()) is not None:
                self.reply_error(message.id, _answerable(error))
            else:
                self.reply_result(message, done.result())

        task.add_done_callback(finished)

    def _invoke(self, message: Call) -> Any:
        """Run a served call's method: what ``dispatch`` resolves it to, else the target's method of its name."""
        if self._dispatch is not None:
            bound = self._dispatch(message)
            if bound is not None:
                return bound()
        return self._lookup_callable(message.method)(*message.args, **message.kwargs)

    def _lookup(self, name: str) -> Any:
        if self._target is None:
            raise AttributeError(f"{self._name} serves no object, so {name!r} is not available")
        if not (_is_public(name) or name in self._allow):
            raise AttributeError(f"{name!r} is not exposed by {self._name} (only public names are)")
        return getattr(self._target, name)

    def _lookup_callable(self, name: str) -> Callable[..., Any]:
        member = self._lookup(name)
        if not callable(member):
            raise TypeError(f"{name!r} of {self._name}'s object is not callable")
        return member  # type: ignore[no-any-return]

    # ----------------------------------------------------------------- answering
    def reply_result(self, request: Call | GetAttribute, value: Any) -> None:
        try:
            self._send_reply(Result(id=request.id, payload=value))
        except (EncodeError, MessageTooLarge) as exc:
            what = self.name_served(request) if isinstance(request, Call) else _describe(request)
            self.reply_error(request.id, type(exc)(f"{self._name}: result of {what}: {exc}"))
        except SidecarError as exc:
            self._endpoint._log.debug("reply not sent", reason=str(exc))

    def reply_error(self, message_id: int, error: BaseException) -> None:
        text = "".join(traceback.format_exception(error))
        try:
            self._send_reply(Error(id=message_id, error=portable_error(error), traceback=text))
        except (EncodeError, MessageTooLarge):
            # Too big to travel (a huge message or traceback): send its gist rather than leave the caller waiting.
            kind = type(error)
            gist = RemoteError(f"{kind.__module__}.{kind.__qualname__}", str(error)[:4096], text[-16384:])
            self.send_quietly(Error(id=message_id, error=gist, traceback=gist.traceback))
        except SidecarError as exc:
            self._endpoint._log.debug("reply not sent", reason=str(exc))

    def _send_reply(self, message: Result | Error) -> None:
        """Send a served call's reply, or hold it if this thread runs a batch of calls (see _Writer.hold). Only
        replies: a request the call makes (a call back to the peer) must go out at once."""
        parts, size = _encode(message, self._name, self._max_bytes)
        holder = self._writer.held_here()
        if holder is None or not self._writer.hold(holder, parts, size):
            self._writer.send(parts, size)

    def send_quietly(self, message: Message) -> None:
        """Send a reply; if the channel is gone there is no one left to tell."""
        try:
            self._writer.send(*_encode(message, self._name, self._max_bytes))
        except SidecarError as exc:
            self._endpoint._log.debug("reply not sent", reason=str(exc))


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _answerable(exc: BaseException) -> BaseException:
    """What the caller gets for what a served request raised: an ``Exception`` as itself; any other
    ``BaseException`` (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, ``CancelledError``) as a
    RemoteError naming it, never as itself, which would end the caller's thread or loop as it ended the call.
    None of them ends the serving side: what ends a worker is its supervisor's business."""
    if isinstance(exc, Exception):
        return exc
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    text = "".join(traceback.format_exception(exc))
    return RemoteError(name, f"the served call raised {name}({', '.join(map(repr, exc.args))})", text)
