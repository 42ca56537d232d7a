"""Request bookkeeping for the RPC endpoint: a request waiting for its reply, and async timeouts.

Kept apart from ``rpc`` so the endpoint reads as routing and I/O: a ``_Pending`` is how sync and
async callers share one core, and ``_Deadlines`` is how async callers time out cheaply.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import threading
from typing import Any

from boss_sidecar.protocol import Call, Event, GetAttribute, Message, SetAttribute


class _Pending:
    """A request waiting for its reply; ``what`` names it in error messages (made only when needed).

    Whoever takes it out of the endpoint's table (the reader with the reply, the caller on
    timeout, closing) settles it, so it is settled exactly once without a lock of its own.
    A sync caller blocks on ``_ready``; an async caller awaits ``future`` on its loop.
    """

    __slots__ = ("_error", "_ready", "_value", "future", "loop", "request")

    def __init__(self, request: Message, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.request = request
        self.loop = loop
        self._value: Any = None
        self._error: BaseException | None = None
        if loop is None:
            self._ready = threading.Lock()
            self._ready.acquire()
        else:
            self.future: asyncio.Future[Any] = loop.create_future()

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        """Hand over the outcome; for an async caller, from any thread."""
        if self.loop is None:
            self._value, self._error = value, error
            self._ready.release()
        else:
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: no one to tell
                self.loop.call_soon_threadsafe(_deliver, self.future, value, error)

    def wait(self, seconds: float | None) -> bool:
        """Block until settled or ``seconds`` passed (None: no limit); True if settled."""
        return self._ready.acquire(timeout=-1 if seconds is None else seconds)

    def outcome(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value

    @property
    def what(self) -> str:
        return _describe(self.request)


def _describe(message: Message) -> str:
    """How error messages name a request: ``call 'method'``, ``get 'name'``, ``ping``, ..."""
    if isinstance(message, Call | Event):
        return f"{'call' if isinstance(message, Call) else 'event'} {message.method!r}"
    if isinstance(message, GetAttribute | SetAttribute):
        return f"{'get' if isinstance(message, GetAttribute) else 'set'} {message.name!r}"
    return str(message.TYPE._value_)


def _deliver(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    """On the caller's loop: resolve its future unless it gave up (timed out or was cancelled)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class _Expired(Exception):
    """Set on an async caller's future when its timeout passes."""


class _Deadlines:
    """The timeouts of async requests on one loop, kept by one timer at the earliest deadline.

    Cheaper than a timer per request (an asyncio timer costs several microseconds to make, and
    as much again to cancel); answered requests are dropped lazily, pruned as the heap grows.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, asyncio.Future[Any]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._prune_at = 1024

    def add(self, seconds: float, message_id: int, future: asyncio.Future[Any]) -> None:
        """Fail ``future`` with _Expired once ``seconds`` passed, unless it is done by then."""
        when = self._loop.time() + seconds
        heapq.heappush(self._heap, (when, message_id, future))
        if self._timer is None or when < self._timer.when():
            self._schedule(when)
        if len(self._heap) > self._prune_at:
            self._heap = [entry for entry in self._heap if not entry[2].done()]
            heapq.heapify(self._heap)
            self._prune_at = max(1024, 2 * len(self._heap))

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        heap = self._heap
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _, _, future = heapq.heappop(heap)
            if not future.done():
                future.set_exception(_Expired())
        if heap:
            self._schedule(heap[0][0])
