"""The endpoint's standby reader: watches the channel while the reader runs a call itself.

Kept apart from ``rpc``: it only knows a descriptor and what to do when data arrives. The reader
runs a call it read on its own thread, so a call that returns quickly wakes no other thread;
meanwhile this thread waits in epoll, armed for one wake-up, and acts only if a message arrives
before the reader is back (a slow call), so heartbeats and other requests are never held up.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable

import structlog

_log = structlog.get_logger("boss_sidecar.rpc")

_ARMED = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLONESHOT", 0)
# Disarmed, a hang-up may still wake it once; the reader being back, nothing happens then.
_DISARMED = getattr(select, "EPOLLONESHOT", 0)


class _Standby:
    """One daemon thread that calls ``on_data()`` when the descriptor becomes readable while armed."""

    SUPPORTED = hasattr(select, "epoll") and hasattr(os, "eventfd")
    """Linux. Elsewhere the endpoint has no standby: a reader passes the reading on before a call."""

    def __init__(self, fd: int, on_data: Callable[[], None], name: str) -> None:
        self._fd = fd
        self._on_data = on_data
        self._owner = os.getpid()
        self._stopping = False
        self._epoll = select.epoll()
        self._stop = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._stop, select.EPOLLIN)
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

    def readable(self) -> bool:
        """Whether something waits to be read now (one system call, no wait)."""
        with contextlib.suppress(OSError, ValueError):
            return bool(self._readable.poll(0))
        return False

    def stop(self) -> None:
        """End the thread (once: it closes the eventfd as it ends). In a forked child there is no
        thread: only this process's copies of the descriptors are closed, the parent's standby
        is left alone."""
        if self._stopping:
            return
        self._stopping = True
        if os.getpid() != self._owner:
            with contextlib.suppress(OSError):
                self._epoll.close()
                os.close(self._stop)
            return
        with contextlib.suppress(OSError):
            os.eventfd_write(self._stop, 1)

    def _run(self) -> None:
        try:
            while True:
                events = self._epoll.poll()
                if any(fd == self._stop for fd, _ in events):
                    return
                try:
                    self._on_data()
                except Exception:  # on_data handles its own errors; this is the last resort
                    _log.exception("standby reader failed")
        finally:
            self._epoll.close()
            os.close(self._stop)
