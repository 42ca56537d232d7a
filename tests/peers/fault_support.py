"""Helpers for the fault tests (``tests/test_faults_*.py``, ``tests/test_security.py``, the chaos run)."""

from __future__ import annotations

import contextlib
import threading

import psutil

BOUND = 20.0
"""No wait in the fault tests is longer than this (well under pytest-timeout)."""


class RestartWatch:
    """An ``on_restart`` hook that keeps each restart's reason; ``wait`` blocks (bounded) for more."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, _incarnation: int, reason: str) -> None:
        with self._changed:
            self.reasons.append(reason)
            self._changed.notify_all()

    @property
    def count(self) -> int:
        return len(self.reasons)

    def wait_past(self, count: int, timeout: float = BOUND) -> bool:
        """Whether more than ``count`` restarts happened within ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.reasons) > count, timeout)

    def next_reason(self, count: int = 0, timeout: float = BOUND) -> str:
        """The reason of restart number ``count + 1``, once it happened."""
        if not self.wait_past(count, timeout):
            raise AssertionError(f"no restart beyond {count} within {timeout:g}s")
        return self.reasons[count]


def worker_gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie nobody reaped counts as ended)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def workers_of(name: str) -> list[int]:
    """Running workers of the sidecar called ``name`` below this process."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            command = child.cmdline()
            if "boss_sidecar.worker" in command and name in command and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child.pid)
    return found
