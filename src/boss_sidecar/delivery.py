"""Getting samples and queries to user code off the channel's I/O thread, in order.

The reader thread only enqueues (``put`` never blocks); a delivery hands items to user code on
its own thread, to an iterator, or to an asyncio loop. A slow callback stalls only itself, and
what waits for it is bounded (the policy's ``subscription_backlog``); a stuck one is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar

from boss_sidecar.logs import get_logger

_log = get_logger("boss_sidecar.delivery")
T = TypeVar("T")
_CLOSED: Any = object()


class Delivery(Generic[T]):
    """Base: ``put`` from the reader thread, ``close`` ends delivery once queued items are done."""

    backlog: Backlog | None = None
    """What waits for user code, and what was dropped (None: a delivery that keeps nothing)."""

    def stuck(self) -> str | None:
        """Why user code on this delivery is stuck, or None."""
        return None

    def put(self, item: T) -> None:
        raise NotImplementedError

    def put_many(self, items: list[T]) -> None:
        """Several items, in order; a delivery that can hands them over at once."""
        for item in items:
            self.put(item)

    def close(self, wait: bool = True) -> None:
        raise NotImplementedError

    def join(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until the items queued before ``close`` were handed over."""


class _Many(Generic[T]):
    """Items queued as one hand-off (distinct from any item a user could be delivered)."""

    __slots__ = ("items",)

    def __init__(self, items: list[T]) -> None:
        self.items = items


class Backlog:
    """Counts items waiting for user code; beyond ``limit`` new ones are dropped, counted and logged.

    The newest are dropped, not the oldest: what is queued stays in order, and a reader that catches
    up sees a gap rather than a reordering. One warning per episode of dropping.
    """

    def __init__(self, limit: int, name: str) -> None:
        self.limit = limit
        self.name = name
        self.waiting = 0
        self.dropped = 0
        self._dropping = False
        self._lock = threading.Lock()

    def admit(self, count: int) -> int:
        """How many of ``count`` new items fit (the first ones); the rest are dropped."""
        with self._lock:
            taken = max(0, min(count, self.limit - self.waiting))
            self.waiting += taken
            lost = count - taken
            warn = lost > 0 and not self._dropping
            self._dropping = lost > 0
            self.dropped += lost
        if warn:
            _log.warning("backlog full: dropping new items", delivery=self.name, limit=self.limit)
        return taken

    def done(self, count: int) -> None:
        with self._lock:
            self.waiting -= count


class _Busy:
    """When user code started on the item it runs now: a run past ``stuck_after`` seconds is stuck,
    shown by ``stuck()`` (in health()) and logged once when more items arrive."""

    __slots__ = ("_backlog", "_name", "_stuck_after", "_warned_since", "since")  # ``since`` is set per item

    def __init__(self, name: str, backlog: Backlog, stuck_after: float) -> None:
        self._name = name
        self._backlog = backlog
        self._stuck_after = stuck_after
        self.since: float | None = None
        self._warned_since: float | None = None

    def stuck(self) -> str | None:
        since = self.since
        if since is None:
            return None
        running = time.monotonic() - since
        if running < self._stuck_after:
            return None
        return f"callback of {self._name} running {running:.1f}s ({self._backlog.waiting} items waiting)"

    def warn_if_stuck(self) -> None:
        since = self.since
        if since is not None and since != self._warned_since and (why := self.stuck()) is not None:
            self._warned_since = since
            _log.warning("callback stuck", delivery=self._name, detail=why)


class CallbackDelivery(Delivery[T]):
    """Runs ``callback(item)`` on a dedicated thread, in arrival order; errors are logged.

    At most ``limit`` items wait (see Backlog). A callback running longer than ``stuck_after``
    seconds is reported by ``stuck()`` (shown in health()) and logged once when more items arrive.
    """

    backlog: Backlog

    def __init__(
        self, callback: Callable[[T], Any], name: str, *, limit: int = 100_000, stuck_after: float = 10.0
    ) -> None:
        self._callback = callback
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._name = name
        self.backlog = Backlog(limit, name)
        self._busy = _Busy(name, self.backlog, stuck_after)
        self._thread = threading.Thread(target=self._run, name=f"deliver-{name}", daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        self.put_many([item])

    def put_many(self, items: list[T]) -> None:
        taken = self.backlog.admit(len(items))
        if taken:
            self._queue.put(_Many(items if taken == len(items) else items[:taken]))  # one hand-off for the lot
        self._busy.warn_if_stuck()

    def stuck(self) -> str | None:
        """Why this delivery is stuck (its callback has run longer than ``stuck_after``), or None."""
        return self._busy.stuck()

    def close(self, wait: bool = True) -> None:
        self._queue.put(_CLOSED)
        if wait:
            self.join(1.0)

    def join(self, timeout: float) -> None:
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        callback, busy, clock = self._callback, self._busy, time.monotonic
        while (queued := self._queue.get()) is not _CLOSED:
            for item in queued.items:
                busy.since = clock()
                try:
                    callback(item)
                except Exception:
                    _log.exception("callback failed", delivery=self._name)
            busy.since = None
            self.backlog.done(len(queued.items))


class QueueDelivery(Delivery[T]):
    """Keeps items for the user to take: ``recv(timeout)`` or ``for item in delivery``; at most
    ``limit`` wait (see Backlog)."""

    backlog: Backlog

    def __init__(self, *, limit: int = 100_000, name: str = "queue") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.backlog = Backlog(limit, name)

    def put(self, item: T) -> None:
        if self.backlog.admit(1):
            self._queue.put(item)

    def put_many(self, items: list[T]) -> None:
        for item in items[: self.backlog.admit(len(items))]:
            self._queue.put(item)

    def close(self, wait: bool = True) -> None:
        self._queue.put(_CLOSED)

    def recv(self, timeout: float | None = None) -> T:
        """The next item; ``queue.Empty`` after ``timeout``, StopIteration-like EOFError once closed."""
        item = self._queue.get(timeout=timeout)
        if item is _CLOSED:
            self._queue.put(_CLOSED)  # keep telling later readers
            raise EOFError("delivery closed")
        self.backlog.done(1)
        return item  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                yield self.recv()
            except EOFError:
                return


class AsyncDelivery(Delivery[T]):
    """Hands items to an asyncio loop: to an (async) callback in order, or to ``async for``.

    As the other deliveries: at most ``limit`` items wait (see Backlog), and a callback (or the
    awaitable it returns) running longer than ``stuck_after`` seconds is reported by ``stuck()``."""

    backlog: Backlog

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[T], Any] | None,
        name: str,
        *,
        limit: int = 100_000,
        stuck_after: float = 10.0,
    ) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._name = name
        self.backlog = Backlog(limit, name)
        self._busy = _Busy(name, self.backlog, stuck_after)
        self._task: asyncio.Task[None] | None = None
        if callback is not None:
            self._task = loop.create_task(self._run(callback))

    def put(self, item: T) -> None:
        self.put_many([item])

    def put_many(self, items: list[T]) -> None:
        taken = self.backlog.admit(len(items))
        if taken:
            with contextlib.suppress(RuntimeError):  # one wake-up of the loop for the lot; closed: no one to tell
                self._loop.call_soon_threadsafe(self._put_all, items if taken == len(items) else items[:taken])
        self._busy.warn_if_stuck()

    def _put_all(self, items: list[T]) -> None:
        for item in items:
            self._queue.put_nowait(item)

    def stuck(self) -> str | None:
        return self._busy.stuck()

    def close(self, wait: bool = True) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, _CLOSED)

    async def _run(self, callback: Callable[[T], Any]) -> None:
        busy = self._busy
        while (item := await self._queue.get()) is not _CLOSED:
            busy.since = time.monotonic()
            try:
                result = callback(item)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("callback failed", delivery=self._name)
            finally:
                busy.since = None
                self.backlog.done(1)  # as CallbackDelivery: an item waits until its callback is done

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                self._queue.put_nowait(_CLOSED)
                return
            self.backlog.done(1)
            yield item
