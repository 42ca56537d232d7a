"""The heartbeat watch: pings the running worker, and kills it when it hangs or breaks its limits.

The supervisor owns one watch and starts its thread once per run; the watch only reads the
supervisor's state (through the callables it is given) and kills, the monitor thread restarts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from boss_sidecar._incarnation import Incarnation
from boss_sidecar.errors import CallTimeout, SidecarError
from boss_sidecar.policy import SidecarPolicy


class HeartbeatWatch:
    """Heartbeats and resource limits of the supervisor's running worker.

    ``ended(run)`` says that ``run`` is over (read under ``cond``, which wakes the watch);
    ``running()`` is the current worker while RUNNING, else None (called under ``cond``);
    ``kill(incarnation, reason)`` kills a worker that hung or broke a limit.
    """

    def __init__(
        self,
        policy: SidecarPolicy,
        cond: threading.Condition,
        *,
        ended: Callable[[int], bool],
        running: Callable[[], Incarnation | None],
        kill: Callable[[Incarnation, str], None],
    ) -> None:
        self.policy = policy
        self._cond = cond
        self._ended = ended
        self._running = running
        self._kill = kill

    def watch(self, run: int) -> None:
        """The heartbeat thread of one run: returns when the run ends."""
        policy = self.policy
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._ended(run), timeout=policy.heartbeat_interval)
                if self._ended(run):
                    return
                incarnation = self._running()
            if incarnation is None or incarnation.endpoint.is_closed:
                continue
            try:
                incarnation.heartbeat_rtt = incarnation.endpoint.ping(timeout=policy.heartbeat_timeout)
                incarnation.heartbeat_at = time.monotonic()
            except CallTimeout:
                self._kill(incarnation, f"hung: no heartbeat answer within {policy.heartbeat_timeout:g}s")
                continue
            except SidecarError:
                continue  # the channel ended: the monitor handles it
            overdue = incarnation.endpoint.peer_overdue
            if overdue:
                self._kill(incarnation, f"hung: {overdue[0]}")
                continue
            self._check_limits(incarnation)

    def _check_limits(self, incarnation: Incarnation) -> None:
        policy = self.policy
        reading = incarnation.probe.read()
        if policy.max_rss_mb is not None and reading.rss_bytes is not None:
            rss_mb = reading.rss_bytes / 1e6
            if rss_mb > policy.max_rss_mb:
                self._kill(incarnation, f"memory limit: RSS {rss_mb:.0f} MB > {policy.max_rss_mb:g} MB")
                return
        if policy.max_cpu_percent is not None and reading.cpu_percent is not None:
            now = time.monotonic()
            if reading.cpu_percent <= policy.max_cpu_percent:
                incarnation.cpu_over_since = None
            elif incarnation.cpu_over_since is None:
                incarnation.cpu_over_since = now
            elif now - incarnation.cpu_over_since >= policy.cpu_window:
                self._kill(
                    incarnation,
                    f"CPU limit: above {policy.max_cpu_percent:g}% for {policy.cpu_window:g}s",
                )

    def overdue(self, current: Incarnation | None, now: float) -> str | None:
        """Why a running worker counts as unhealthy before the heartbeat timeout kills it, if it does.

        A beat is due every ``heartbeat_interval``; one missed (silence beyond a second interval,
        or the timeout if shorter) is reported at once, not only when the kill comes.
        """
        if current is None:
            return None
        last = current.heartbeat_at if current.heartbeat_at is not None else current.ready_at
        if last is None:
            return None
        policy = self.policy
        silent = now - last
        if silent <= policy.heartbeat_interval + min(policy.heartbeat_interval, policy.heartbeat_timeout):
            return None
        return f"heartbeat overdue: no answer for {silent:.1f}s (killed after {policy.heartbeat_timeout:g}s)"


__all__ = ["HeartbeatWatch"]
