"""Getting samples and queries to user code off the channel's I/O thread, in order.

The reader thread only enqueues (``put`` never blocks); a delivery hands items to user code on
its own thread, to an iterator, or to an asyncio loop. A slow callback stalls only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar

from boss_sidecar.logs import get_logger

_log = get_logger("boss_sidecar.delivery")
T = TypeVar("T")
_CLOSED: Any = object()


class Delivery(Generic[T]):
    """Base: ``put`` from the reader thread, ``close`` ends delivery once queued items are done."""

    def put(self, item: T) -> None:
        raise NotImplementedError

    def put_many(self, items: list[T]) -> None:
        """Several items, in order; a delivery that can hands them over at once."""
        for item in items:
            self.put(item)

    def close(self) -> None:
        raise NotImplementedError


class _Many(Generic[T]):
    """Items queued as one hand-off (distinct from any item a user could be delivered)."""

    __slots__ = ("items",)

    def __init__(self, items: list[T]) -> None:
        self.items = items


class CallbackDelivery(Delivery[T]):
    """Runs ``callback(item)`` on a dedicated thread, in arrival order; errors are logged."""

    def __init__(self, callback: Callable[[T], Any], name: str) -> None:
        self._callback = callback
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._name = name
        self._thread = threading.Thread(target=self._run, name=f"deliver-{name}", daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        self._queue.put(item)

    def put_many(self, items: list[T]) -> None:
        self._queue.put(_Many(items))  # one hand-off (and one wake-up) for the lot

    def close(self) -> None:
        self._queue.put(_CLOSED)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        callback = self._callback
        while (queued := self._queue.get()) is not _CLOSED:
            for item in queued.items if type(queued) is _Many else (queued,):
                try:
                    callback(item)
                except Exception:
                    _log.exception("callback failed", delivery=self._name)


class QueueDelivery(Delivery[T]):
    """Keeps items for the user to take: ``recv(timeout)`` or ``for item in delivery``."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False

    def put(self, item: T) -> None:
        self._queue.put(item)

    def close(self) -> None:
        self._closed = True
        self._queue.put(_CLOSED)

    def recv(self, timeout: float | None = None) -> T:
        """The next item; ``queue.Empty`` after ``timeout``, StopIteration-like EOFError once closed."""
        item = self._queue.get(timeout=timeout)
        if item is _CLOSED:
            self._queue.put(_CLOSED)  # keep telling later readers
            raise EOFError("delivery closed")
        return item  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[T]:
        while True:
            try:
                yield self.recv()
            except EOFError:
                return


class AsyncDelivery(Delivery[T]):
    """Hands items to an asyncio loop: to an (async) callback in order, or to ``async for``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[T], Any] | None, name: str) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._name = name
        self._task: asyncio.Task[None] | None = None
        if callback is not None:
            self._task = loop.create_task(self._run(callback))

    def put(self, item: T) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed: nobody left to deliver to
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def put_many(self, items: list[T]) -> None:
        with contextlib.suppress(RuntimeError):  # one wake-up of the loop for the lot
            self._loop.call_soon_threadsafe(self._put_all, items)

    def _put_all(self, items: list[T]) -> None:
        for item in items:
            self._queue.put_nowait(item)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, _CLOSED)

    async def _run(self, callback: Callable[[T], Any]) -> None:
        async for item in self:
            try:
                result = callback(item)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("callback failed", delivery=self._name)

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                self._queue.put_nowait(_CLOSED)
                return
            yield item
