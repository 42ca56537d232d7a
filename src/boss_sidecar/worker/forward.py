"""Hand-off from zenoh callbacks to the host.

zenoh forbids blocking or calling zenoh inside a callback (and since 1.8 undeclare waits for
running callbacks), so callbacks only append to a queue. One thread drains it and sends what
has piled up as one event per kind, which also batches a burst of samples into few messages.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import structlog

from boss_sidecar.errors import SidecarError

_log = structlog.get_logger("boss_sidecar.worker.forward")

MAX_BATCH = 512
_DRAIN = "__drain__"

Item = tuple[str, Any]
"""(event name, argument): the forwarder sends each run of one name as ``name(list_of_args)``."""


class Forwarder:
    """Collects items from any thread without blocking; a daemon thread sends them in order."""

    def __init__(self, send: Callable[[str, list[Any]], None], convert: Callable[[str, Any], Any]) -> None:
        self._queue: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._send = send
        self._convert = convert
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._thread.start()

    def push(self, name: str, item: Any) -> None:
        """Safe inside a zenoh callback: never blocks, never calls zenoh."""
        self._queue.put((name, item))

    def drain(self, timeout: float) -> bool:
        """Wait until everything pushed before this call was sent to the host."""
        done = threading.Event()
        self._queue.put((_DRAIN, done))
        return done.wait(timeout)

    def close(self, timeout: float = 1.0) -> None:
        """Send what is queued, then stop the thread (bounded)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._flush(batch)
                    return
                batch.append(item)
            self._flush(batch)

    def _flush(self, batch: list[Item]) -> None:
        run_name = batch[0][0]
        run: list[Any] = []
        for name, item in batch:
            if name != run_name:
                self._emit(run_name, run)
                run_name, run = name, []
            if name == _DRAIN:
                run.append(item)
                continue
            try:
                run.append(self._convert(name, item))
            except Exception:
                _log.exception("could not convert item for the host", kind=name)
        self._emit(run_name, run)

    def _emit(self, name: str, items: list[Any]) -> None:
        if not items:
            return
        if name == _DRAIN:
            for done in items:
                done.set()
            return
        try:
            self._send(name, items)
        except SidecarError as exc:
            _log.debug("host unreachable; dropped items", kind=name, count=len(items), reason=str(exc))
