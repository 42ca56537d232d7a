"""The reading role of an RPC endpoint: which thread may read the channel, as named states.

Exactly one thread at a time reads the channel, so messages are routed in arrival order and exactly one
thread sees the channel end. The role is a lock that is taken without waiting (whoever finds it taken
leaves the reading to its holder) plus the state below; only the holder changes the state, so it always
says who reads. Each change is checked against ``TRANSITIONS`` and logged at debug level under
``boss_sidecar.rpc.reading`` (stdlib ``logging``: nothing is written unless the host configures it).
"""

from __future__ import annotations

import logging
import threading
from enum import StrEnum

from boss_sidecar.errors import SidecarError

_log = logging.getLogger("boss_sidecar.rpc.reading")


class Reading(StrEnum):
    """Who holds the reading role."""

    FREE = "free"
    """No one: the next to take it reads (a sync caller for its reply; the standby when data comes while armed)."""
    CALLER = "caller"
    """A caller's thread reads for its own reply (sync), or busy-waits for it on its loop (the lone async caller)."""
    STANDBY = "standby"
    """The standby thread reads: what came while no one read, or work a caller read and may not run itself."""
    READER = "reader"
    """A pool thread reads and runs the calls it reads (the serving side's leader/follower reader)."""
    HANDED = "handed"
    """Held, on its way to another thread: a job queued for the standby, or a reader submitted to the pool."""
    ENDED = "ended"
    """The channel ended: the role is never free again, so no one reads a closed descriptor."""


R = Reading
READERS = frozenset({R.CALLER, R.STANDBY, R.READER})
"""States in which a thread reads."""
TRANSITIONS: dict[Reading, frozenset[Reading]] = {
    R.FREE: READERS,  # take: without waiting, by whoever finds it free
    R.CALLER: frozenset({R.FREE, R.HANDED, R.ENDED}),
    R.STANDBY: frozenset({R.FREE, R.HANDED, R.ENDED}),
    R.READER: frozenset({R.FREE, R.HANDED, R.ENDED}),
    R.HANDED: READERS | {R.FREE, R.ENDED},  # take up, by the thread it was handed to (or back, if no one took it)
    R.ENDED: frozenset(),
}


class InvalidReadingTransition(SidecarError):
    """A change of the reading role that ``TRANSITIONS`` does not allow (a bug, not a user error)."""


class ReadingRole:
    """The role, its state and the thread holding it. It starts held, HANDED to whoever starts reading."""

    __slots__ = ("_lock", "_name", "state", "thread")

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._lock.acquire()
        self.state = R.HANDED
        self.thread: threading.Thread | None = None  # the thread reading (a READERS state), else None

    def take(self, state: Reading) -> bool:
        """Take the role if it is free, to read as ``state``; False (at once) if another holds it."""
        if not self._lock.acquire(blocking=False):
            return False
        self._change(state, threading.current_thread())
        return True

    def take_up(self, state: Reading) -> None:
        """Read as ``state`` with the role handed to this thread (only a role handed on is taken up: a free one
        is taken, see take)."""
        if self.state is not R.HANDED:
            raise InvalidReadingTransition(
                f"{self._name}: reading role cannot go from {self.state} to {state}: only a role handed on is taken up"
            )
        self._change(state, threading.current_thread())

    def hand(self) -> None:
        """Let go of the role without freeing it: another thread (or this one, later) takes it up."""
        self._change(R.HANDED, None)

    def set_down(self) -> None:
        """Free the role (held)."""
        self._change(R.FREE, None)
        self._lock.release()

    def end(self) -> None:
        """The channel ended: keep the role taken for good."""
        self._change(R.ENDED, None)

    def reads_here(self) -> bool:
        """Whether the current thread holds the role and reads."""
        return self.thread is threading.current_thread()

    def _change(self, new: Reading, thread: threading.Thread | None) -> None:
        old = self.state
        if new not in TRANSITIONS[old]:
            raise InvalidReadingTransition(f"{self._name}: reading role cannot go from {old} to {new}")
        self.state, self.thread = new, thread
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "%s: reading role %s -> %s (%s)",
                self._name,
                old,
                new,
                threading.current_thread().name,
                extra={"endpoint": self._name, "old": str(old), "new": str(new)},
            )
