"""The endpoint's standby thread: watches the channel while no thread reads it.

Kept apart from ``rpc``: it only knows a descriptor, what to do when data arrives, and jobs handed
to it. On the serving side the reader runs a call it read on its own thread, so a call that returns
quickly wakes no other thread; meanwhile this thread waits in epoll, armed for one wake-up, and acts
only if a message arrives before the reader is back (a slow call), so heartbeats and other requests
are never held up. On the calling side it reads what arrives while no caller reads, and runs the
work for the peer that a caller read but may not run on its own thread.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import threading
from collections.abc import Callable

from boss_sidecar.logs import get_logger

_log = get_logger("boss_sidecar.rpc")

_ARMED = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLONESHOT", 0)
# Disarmed, a hang-up may still wake it once; the reader being back, nothing happens then.
_DISARMED = getattr(select, "EPOLLONESHOT", 0)


class _Standby:
    """One daemon thread that calls ``on_data()`` when the descriptor becomes readable while armed,
    and runs the jobs handed to it."""

    SUPPORTED = hasattr(select, "epoll") and hasattr(os, "eventfd")
    """Linux. Elsewhere the endpoint has no standby: a reader passes the reading on before a call."""

    def __init__(self, fd: int, on_data: Callable[[], None], name: str) -> None:
        self._fd = fd
        self._on_data = on_data
        self._owner = os.getpid()
        self._stopping = False
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._epoll = select.epoll()
        self._signal = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # a job, or stop
        self._signal_lock = threading.Lock()  # held to write the eventfd and to close it
        self._signal_open = True
        self._epoll.register(self._signal, select.EPOLLIN)
        self._epoll.register(fd, _DISARMED)
        self._readable = select.poll()
        self._readable.register(fd, select.POLLIN)
        self._thread = threading.Thread(target=self._run, name=f"{name}-standby", daemon=True)
        self._thread.start()

    def arm(self) -> None:
        """Wake once when a message is (or already was) waiting to be read."""
        with contextlib.suppress(OSError, ValueError):  # closed meanwhile: nothing left to watch
            self._epoll.modify(self._fd, _ARMED)

    def disarm(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._epoll.modify(self._fd, _DISARMED)

    def hand(self, job: Callable[[], None]) -> None:
        """Run ``job`` on this thread soon. Nothing here waits (a lock is held around one system call at
        most), so an interrupt (a signal in the calling thread) has only the moment between queuing the
        job and signalling it to cut the hand-over short: a caller cut short there hands it again (see
        _CallerReading.recover), and a job must bear being queued twice."""
        self._jobs.append(job)
        self._wake()

    def readable(self, within: float = 0.0) -> bool:
        """Whether something waits to be read now, or does within ``within`` seconds (one system call).

        Only the thread holding the endpoint's reading role asks, so no two ask at once."""
        with contextlib.suppress(OSError, ValueError):
            return bool(self._readable.poll(max(0.0, within) * 1000))
        return False

    def stop(self) -> None:
        """End the thread (once: it closes the eventfd as it ends). In a forked child there is no
        thread: only this process's copies of the descriptors are closed, the parent's standby
        is left alone."""
        if self._stopping:
            return
        self._stopping = True
        if os.getpid() != self._owner:  # no thread here, and the lock may have been held at the fork
            with contextlib.suppress(OSError):
                self._epoll.close()
                os.close(self._signal)
            return
        self._wake()

    def _wake(self) -> None:
        """Signal the thread, unless it has ended: its eventfd's number may belong to another file by then
        (the thread can end between ``stop`` setting the flag and signalling, woken by a job)."""
        with self._signal_lock, contextlib.suppress(OSError):
            if self._signal_open:
                os.eventfd_write(self._signal, 1)

    def _close_signal(self) -> None:
        with self._signal_lock, contextlib.suppress(OSError):
            if self._signal_open:
                self._signal_open = False
                os.close(self._signal)

    def _run(self) -> None:
        """Wait for jobs and, while armed, for data; one wake-up may bring both, and both are acted on.

        The channel is watched one-shot: its readiness, once reported, is not reported again until the
        next ``arm``. Dropping it because a job's signal came in the same wake-up (a job handed while the
        last ran, so run already) left data unread with no one to read it."""
        try:
            while True:
                ready = {fd for fd, _ in self._epoll.poll()}
                if self._signal in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(self._signal)
                    if self._stopping:
                        return
                    self._run_jobs()
                if self._fd in ready:
                    self._guarded(self._on_data)
        finally:
            self._epoll.close()
            self._close_signal()

    def _run_jobs(self) -> None:
        while self._jobs:
            self._guarded(self._jobs.popleft())

    @staticmethod
    def _guarded(work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:  # the work handles its own errors; this is the last resort
            _log.exception("standby reader failed")
