"""The supervisor's named states, the transitions allowed between them, and one place to change them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from boss_sidecar.errors import SidecarError
from boss_sidecar.logs import Logger


class SidecarState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    FAILED = "failed"


S = SidecarState
TRANSITIONS: dict[SidecarState, frozenset[SidecarState]] = {
    S.STOPPED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.RUNNING, S.BACKOFF, S.FAILED, S.STOPPING}),
    S.RUNNING: frozenset({S.BACKOFF, S.STARTING, S.STOPPING, S.FAILED, S.STOPPED}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPING, S.FAILED}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.FAILED: frozenset({S.STARTING, S.STOPPING, S.STOPPED}),
}
ACTIVE_STATES = frozenset({S.STARTING, S.RUNNING, S.BACKOFF})
"""States in which a worker exists or is about to: calls wait for RUNNING."""
FINAL_STATES = frozenset({S.STOPPED, S.FAILED})
"""States in which calls fail at once with SidecarUnavailable."""


class InvalidTransition(SidecarError):
    """A state change the supervisor does not allow (a bug, not a user error)."""


@dataclass(frozen=True, slots=True)
class StateChange:
    old: SidecarState
    new: SidecarState
    reason: str
    at: float


StateHook = Callable[[StateChange], None]


class StateMachine:
    """Holds the state under a condition variable; ``change`` checks, logs and runs hooks."""

    def __init__(self, log: Logger) -> None:
        self.condition = threading.Condition()
        self.state = SidecarState.STOPPED
        self.reason = "not started"
        self.since = time.monotonic()
        self._hooks: list[StateHook] = []
        self._log = log

    def add_hook(self, hook: StateHook) -> None:
        self._hooks.append(hook)

    def change(self, new: SidecarState, reason: str) -> StateChange:
        """Move to ``new``; raises InvalidTransition for a change the table does not allow."""
        with self.condition:
            old = self.state
            if new not in TRANSITIONS[old]:
                raise InvalidTransition(f"cannot go from {old} to {new} ({reason})")
            self.state, self.reason, self.since = new, reason, time.monotonic()
            change = StateChange(old, new, reason, self.since)
            self.condition.notify_all()
        level = "warning" if new in (S.FAILED, S.BACKOFF) else "info"
        getattr(self._log, level)("state changed", old=str(old), new=str(new), reason=reason)
        for hook in list(self._hooks):
            try:
                hook(change)
            except Exception:
                self._log.exception("state hook failed")
        return change
