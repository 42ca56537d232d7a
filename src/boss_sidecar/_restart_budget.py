"""The restart policy's bookkeeping: the intensity limit and the backoff between restarts."""

from __future__ import annotations

import collections
import random
from collections.abc import Callable

from boss_sidecar.policy import SidecarPolicy


class RestartBudget:
    """At most ``max_restarts`` restarts within ``restart_window``; a delay that grows with failures in a row.

    Only the supervisor's monitor thread of the current run uses it (``reset`` begins a run).
    """

    def __init__(self, policy: SidecarPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self._clock = clock
        self._restart_times: collections.deque[float] = collections.deque()
        self._consecutive_failures = 0

    def reset(self) -> None:
        """A new run: no restarts counted, the first restart immediate."""
        self._restart_times.clear()
        self._consecutive_failures = 0

    def ran_stably(self, started: float) -> None:
        """A worker started at ``started`` ended: if it ran longer than the window, the next restart is immediate."""
        if self._clock() - started > self.policy.restart_window:
            self._consecutive_failures = 0  # it ran stably: the next restart is immediate again

    def recent(self) -> int:
        """Restarts within the window (older ones are forgotten)."""
        now = self._clock()
        window = self.policy.restart_window
        while self._restart_times and now - self._restart_times[0] > window:
            self._restart_times.popleft()
        return len(self._restart_times)

    def next_delay(self) -> float:
        """The backoff before the next attempt, which counts as one more failure in a row."""
        self._consecutive_failures += 1
        return self.policy.backoff(self._consecutive_failures, random.uniform(-1, 1))

    def record(self) -> None:
        """A restart attempt begins now."""
        self._restart_times.append(self._clock())


__all__ = ["RestartBudget"]
