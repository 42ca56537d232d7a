"""Helpers for the fault tests (``tests/test_faults_*.py``, ``tests/test_security.py``, the chaos run)."""

from __future__ import annotations

import contextlib
import itertools
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable
from typing import Any

import psutil

from boss_sidecar.supervisor import ProcessBackend

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


def live_workers(wanted: Callable[[psutil.Process], bool], among: Iterable[psutil.Process] | None = None) -> list[int]:
    """Running (not zombie) worker processes that ``wanted`` accepts: ``among`` these, or on the machine."""
    found = []
    for process in psutil.process_iter() if among is None else among:
        with contextlib.suppress(psutil.Error):
            if (
                "boss_sidecar.worker" in process.cmdline()
                and process.status() != psutil.STATUS_ZOMBIE
                and wanted(process)
            ):
                found.append(process.pid)
    return found


def workers_of(name: str) -> list[int]:
    """Running workers of the sidecar called ``name`` below this process."""
    return live_workers(lambda process: name in process.cmdline(), psutil.Process().children(recursive=True))


def workers_started_by(host_pid: int) -> list[int]:
    """Running workers whose host was ``host_pid`` (their ``--parent-pid``), wherever they are now."""
    return live_workers(
        lambda process: dict(itertools.pairwise(process.cmdline())).get("--parent-pid") == str(host_pid)
    )


class Numbers:
    """A subscription callback keeping the numbers its samples carry, in arrival order; ``wait_for`` one
    to be the latest (bounded). For the put-loss test and ``scripts/put_loss.py``."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self._changed = threading.Condition()

    def __call__(self, sample: Any) -> None:
        with self._changed:
            self.seen.append(int(sample.payload))
            self._changed.notify_all()

    def wait_for(self, number: int, timeout: float = BOUND) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: number in self.seen[-1:], timeout)


class CtrlCAtSigterm(ProcessBackend):
    """Spawns workers as usual; when ``armed``, raises KeyboardInterrupt in stop() right after it sent
    SIGTERM (a Ctrl-C arriving while stop() escalates), once."""

    def __init__(self) -> None:
        self.armed = False

    def kill(self, process: subprocess.Popen[bytes], signum: int) -> None:
        super().kill(process, signum)
        if signum == signal.SIGTERM and self.armed:
            self.armed = False
            raise KeyboardInterrupt
