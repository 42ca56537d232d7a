"""A sidecar's health as one typed value: supervisor facts, psutil readings and heartbeats."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil


@dataclass(frozen=True, slots=True)
class Health:
    """What an operator checks. ``healthy`` is RUNNING with a fresh heartbeat."""

    name: str
    state: str
    healthy: bool
    reason: str
    pid: int | None
    incarnation: int
    uptime: float | None
    restarts: int
    last_exit: str | None
    rss_bytes: int | None
    cpu_percent: float | None
    threads: int | None
    open_fds: int | None
    heartbeat_rtt: float | None
    heartbeat_age: float | None
    stuck_callbacks: tuple[str, ...] = ()
    """Host callbacks running longer than the policy's ``stuck_callback_after`` (the worker is fine)."""
    dropped_samples: int = 0
    """Samples and queries dropped because a subscription's backlog was full (``subscription_backlog``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (lists, not tuples), so the dict survives a JSON round trip unchanged."""
        values = dataclasses.asdict(self)
        values["stuck_callbacks"] = list(self.stuck_callbacks)
        return values


@dataclass(frozen=True, slots=True)
class ProcessReading:
    rss_bytes: int | None
    cpu_percent: float | None
    threads: int | None
    open_fds: int | None


MIN_CPU_INTERVAL = 0.5
"""Seconds a CPU measurement spans at least; a reading sooner repeats the last one."""


class ProcessProbe:
    """psutil readings of one worker process; CPU percent is measured between two readings.

    Health requests and the limit checks share one probe: without ``MIN_CPU_INTERVAL`` a burst
    of health requests would shrink the measured span to nothing and hide sustained CPU use.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._lock = threading.Lock()
        self._cpu: float | None = None
        self._cpu_at = time.monotonic()
        try:
            self._process: psutil.Process | None = psutil.Process(pid)
            self._process.cpu_percent(None)
        except psutil.Error:
            self._process = None

    def read(self) -> ProcessReading:
        process = self._process
        if process is None:
            return ProcessReading(None, None, None, None)
        try:
            with self._lock, process.oneshot():
                now = time.monotonic()
                if self._cpu is None or now - self._cpu_at >= MIN_CPU_INTERVAL:
                    self._cpu, self._cpu_at = process.cpu_percent(None), now
                return ProcessReading(
                    rss_bytes=process.memory_info().rss,
                    cpu_percent=self._cpu,
                    threads=process.num_threads(),
                    open_fds=process.num_fds(),
                )
        except psutil.Error:
            return ProcessReading(None, None, None, None)
