"""Requests awaiting replies: the table by id, settling them (sync and async callers), async deadlines.

Kept apart from ``rpc``: whoever takes a request out of the table settles it (the reader with its
reply, the caller on timeout, closing), so it is settled exactly once. The reader settles at the end
of each batch it read (see ``wake``): a thread woken earlier would find the GIL taken and sleep again.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from boss_sidecar._pending import _Deadlines, _deliver, _Pending
from boss_sidecar._writer import _Writer
from boss_sidecar.errors import SidecarError
from boss_sidecar.protocol import Message

_Delivery = tuple[asyncio.Future[Any], Any, Any]


class _Requests:
    """The requests of one endpoint awaiting replies, and whether the endpoint is closed (one lock for
    both: a request is registered only while the endpoint is open, and closing fails all registered)."""

    def __init__(self, writer: _Writer) -> None:
        self._writer = writer
        self.lock = threading.Lock()
        self.table: dict[int, _Pending] = {}
        self.closed: SidecarError | None = None
        self.awaited = 0  # async requests being awaited (see _CallerReading)
        self._settled: list[tuple[_Pending, Any, BaseException | None]] = []  # this batch's, for wake
        self._undelivered: dict[asyncio.AbstractEventLoop, list[_Delivery]] = {}  # replies a loop is yet to take
        self._deadlines: dict[asyncio.AbstractEventLoop, _Deadlines] = {}

    def raise_if_closed(self) -> None:
        if self.closed is not None:
            raise type(self.closed)(str(self.closed))

    def register(self, message: Message, loop: asyncio.AbstractEventLoop | None) -> _Pending:
        pending = _Pending(message, loop)
        with self.lock:
            self.raise_if_closed()
            self.table[message.id] = pending
        return pending

    def close(self, error: SidecarError) -> bool:
        """Mark closed with ``error`` and fail every request waiting; False if closed already."""
        with self.lock:
            if self.closed is not None:
                return False
            self.closed = error
            pending, self.table = self.table, {}
        self._writer.close(error)
        while pending:  # popitem, not iteration: a reply or a timeout may take entries concurrently
            _, request = pending.popitem()
            request.settle(error=type(error)(f"{error} (during {request.what})"))
        return True

    # ----------------------------------------------------------------- settling, from the reader
    def settle(self, pending: _Pending, value: Any = None, error: BaseException | None = None) -> None:
        """Settle from the reader, at the end of the current batch (see wake)."""
        self._settled.append((pending, value, error))

    def answer(self, message_id: int, value: Any = None, error: BaseException | None = None) -> bool:
        """Settle the request ``message_id`` (if still waiting) at the end of the batch; True if it was."""
        pending = self.table.pop(message_id, None)
        if pending is None:
            return False
        self._settled.append((pending, value, error))
        return True

    def wake(self, here: asyncio.AbstractEventLoop | None = None) -> None:
        """Wake the callers answered in the batch just read.

        Async callers are woken with one hand-off per event loop for the whole batch; those of ``here``,
        the loop running this thread (an async caller reading), are resolved at once."""
        if not self._settled:
            return
        settled, self._settled = self._settled, []
        per_loop: dict[asyncio.AbstractEventLoop, list[_Delivery]] = {}
        interrupt = None
        at = 0
        while at < len(settled):
            try:  # an interrupt (Ctrl-C on a caller reading) wakes the rest all the same, then is raised
                while at < len(settled):
                    pending, value, error = settled[at]
                    at += 1
                    if pending.loop is None:
                        pending.settle(value, error)
                    else:
                        per_loop.setdefault(pending.loop, []).append((pending.future, value, error))
            except BaseException as exc:
                interrupt = interrupt or exc
        for loop, items in per_loop.items():
            if loop is here:
                for future, value, error in items:
                    _deliver(future, value, error)
            else:
                self._deliver_later(loop, items)
        if interrupt is not None:
            raise interrupt

    def _deliver_later(self, loop: asyncio.AbstractEventLoop, items: list[_Delivery]) -> None:
        """Have ``loop`` resolve these futures: added to the replies it has yet to take, if any, so a
        loop is woken once for all the batches read before it got round to them."""
        with self.lock:
            waiting = self._undelivered.get(loop)
            if waiting is not None:
                waiting += items
                return
            self._undelivered[loop] = items
        try:
            loop.call_soon_threadsafe(self._deliver_on, loop)
        except RuntimeError:  # that caller's loop is closed: no one to tell
            with self.lock:
                self._undelivered.pop(loop, None)

    def _deliver_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``: resolve the futures of the replies read for it; cork its writes for this turn, so
        the requests of the tasks woken go out together."""
        with self.lock:
            items = self._undelivered.pop(loop, [])
        try:
            self._writer.cork(loop)
            for future, value, error in items:
                _deliver(future, value, error)
        finally:  # an interrupt (Ctrl-C) on the loop must not leave it corked
            loop.call_soon(self._writer.uncork, loop)  # runs after the steps of the tasks just woken

    # ----------------------------------------------------------------- async callers
    def deadlines_of(self, loop: asyncio.AbstractEventLoop) -> _Deadlines:
        deadlines = self._deadlines.get(loop)
        if deadlines is None:
            with self.lock:
                for closed in [known for known in self._deadlines if known.is_closed()]:
                    del self._deadlines[closed]
                deadlines = self._deadlines[loop] = _Deadlines(loop)
        return deadlines
