"""Hand-off from zenoh callbacks to the host.

zenoh forbids blocking or calling zenoh inside a callback (and since 1.8 undeclare waits for
running callbacks), so callbacks only append to a queue. One thread drains it and sends what
has piled up as one event per kind, which also batches a burst of samples into few messages.
"""

from __future__ import annotations

import itertools
import operator
import queue
import threading
from collections.abc import Callable
from typing import Any

from boss_sidecar._framing import _READ_BUFFER
from boss_sidecar.errors import SidecarError
from boss_sidecar.logs import get_logger

_log = get_logger("boss_sidecar.worker.forward")

MAX_BATCH = 512
"""Items taken off the queue at once (a run pushed at once is not split)."""
MAX_MESSAGE_BYTES = _READ_BUFFER // 2
"""Payload bytes per message at most (one item may exceed it): half the host's read buffer, so a
message this size is read into that reusable buffer, whole, most reads. Larger ones cost it (and
us) a fresh allocation each, and the page faults that come with it cost more than the extra
messages; smaller ones cost more messages (at 192 KiB, 64 KiB samples were delivered some 25%
slower)."""
_DRAIN = "__drain__"

Entry = tuple[str, list[Any]]
"""(event name, items): the forwarder sends each run of one name as ``name(list_of_converted_items)``."""

Convert = Callable[[str, list[Any]], list[Any]]
"""``convert(name, items)``: what travels for a run of items of one name, in order."""
Weigh = Callable[[str, Any], int]
"""``weigh(name, converted_item)``: its payload bytes, to split a run into messages."""


class Forwarder:
    """Collects items from any thread without blocking; a daemon thread sends them in order."""

    def __init__(self, send: Callable[[str, list[Any]], None], convert: Convert, weigh: Weigh | None = None) -> None:
        self._queue: queue.SimpleQueue[Entry | None] = queue.SimpleQueue()
        self._send = send
        self._convert = convert
        self._weigh = weigh
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._thread.start()

    def push(self, name: str, item: Any) -> None:
        """Safe inside a zenoh callback: never blocks, never calls zenoh."""
        self._queue.put((name, [item]))

    def push_many(self, name: str, items: list[Any]) -> None:
        """Several items of one name in one hand-off; never blocks."""
        self._queue.put((name, items))

    def drain(self, timeout: float) -> bool:
        """Wait until everything pushed before this call was sent to the host."""
        done = threading.Event()
        self._queue.put((_DRAIN, [done]))
        return done.wait(timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Send what is queued, then stop the thread (bounded)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            first = get()
            if first is None:
                return
            batch, count = [first], len(first[1])
            closing = False
            while count < MAX_BATCH:
                try:
                    entry = get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    closing = True
                    break
                batch.append(entry)
                count += len(entry[1])
            for name, run in itertools.groupby(batch, key=operator.itemgetter(0)):
                self._emit(name, [item for _, items in run for item in items])
            if closing:
                return

    def _emit(self, name: str, items: list[Any]) -> None:
        if name == _DRAIN:
            for done in items:
                done.set()
            return
        try:
            converted = self._convert(name, items)
        except Exception:
            converted = self._convert_each(name, items)
        for message in self._split(name, converted):
            try:
                self._send(name, message)
            except SidecarError as exc:
                _log.debug("host unreachable; dropped items", kind=name, count=len(message), reason=str(exc))

    def _convert_each(self, name: str, items: list[Any]) -> list[Any]:
        """One by one, so an item that cannot be converted costs only itself."""
        converted: list[Any] = []
        for item in items:
            try:
                converted += self._convert(name, [item])
            except Exception:
                _log.exception("could not convert item for the host", kind=name)
        return converted

    def _split(self, name: str, items: list[Any]) -> list[list[Any]]:
        """``items`` as messages of at most MAX_MESSAGE_BYTES of payload each (or one item)."""
        weigh = self._weigh
        if weigh is None or not items:
            return [items] if items else []
        return [items[start:end] for start, end in spans([weigh(name, item) for item in items])]


def spans(weights: list[int]) -> list[tuple[int, int]]:
    """(start, end) of consecutive groups of at most MAX_MESSAGE_BYTES in all, or of one item alone.

    A group ends before the item that would take it past the limit, not after it: a message never
    outgrows the host's read buffer because the last item in it was large."""
    groups: list[tuple[int, int]] = []
    start, total = 0, 0
    for index, weight in enumerate(weights):
        if total + weight > MAX_MESSAGE_BYTES and index > start:
            groups.append((start, index))
            start, total = index, 0
        total += weight
    if weights:
        groups.append((start, len(weights)))
    return groups
