"""The small thread pool the RPC endpoint serves calls on.

Kept apart from ``rpc``: it knows nothing of messages, only of jobs that reply by themselves.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

from boss_sidecar.logs import get_logger

_log = get_logger("boss_sidecar.rpc")  # its failures are the endpoint's; logged under its name


class _Pool:
    """Threads for served calls: started on demand up to ``size``, then kept until ``shutdown``.

    Leaner than ``ThreadPoolExecutor`` (no future per job; the call replies by itself). The threads
    are daemons so a served call that never returns cannot hold up the process's exit.

    Every job queued is either claimed by a free thread (an idle one, or one started for it) or
    is excess, waiting for a busy thread to finish. A thread that finishes takes excess work
    before it counts as idle, so while any thread is idle no job waits: ``try_submit`` relies
    on that to start a job at once or not at all.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = max(1, size)
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Callable[[Any], None], Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # free threads no queued job has claimed
        self._excess = 0  # queued jobs no free thread has claimed
        self._shut = False

    def submit(self, job: Callable[[Any], None], argument: Any) -> None:
        """Run ``job(argument)`` on a pool thread; RuntimeError once shut down."""
        self._put(job, argument, must_start=False)

    def try_submit(self, job: Callable[[Any], None], argument: Any) -> bool:
        """Run ``job(argument)`` on a pool thread if one is free (or may be started), else do nothing."""
        return self._put(job, argument, must_start=True)

    def has_free(self) -> bool:
        """Whether a job submitted now would start at once (a hint: another submit may take it first)."""
        return self._idle > 0 or self._threads < self._size

    def _put(self, job: Callable[[Any], None], argument: Any, *, must_start: bool) -> bool:
        with self._lock:
            if self._shut:
                raise RuntimeError("pool is shut down")
            start = False
            if self._idle:
                self._idle -= 1
            elif self._threads < self._size:
                self._threads += 1
                start = True
            elif must_start:
                return False
            else:
                self._excess += 1
        self._jobs.put((job, argument))
        if start:
            threading.Thread(target=self._work, name=f"{self._name}-{self._threads}", daemon=True).start()
        return True

    def shutdown(self) -> list[tuple[Callable[[Any], None], Any]]:
        """Drop queued jobs (returned) and let the threads end once their current job returns."""
        with self._lock:
            self._shut = True
            threads = self._threads
        dropped = []
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._jobs.get_nowait()
                if item is not None:
                    dropped.append(item)
        for _ in range(threads):
            self._jobs.put(None)
        return dropped

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, argument = item
            try:
                job(argument)
            except BaseException:  # a job handles its own errors; this is the last resort
                _log.exception("served job failed", pool=self._name)
            with self._lock:
                if self._excess:
                    self._excess -= 1
                else:
                    self._idle += 1
