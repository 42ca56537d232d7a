"""The reading role of an RPC endpoint: which thread may read the channel, as named states.

Exactly one thread at a time reads the channel, so messages are routed in arrival order and exactly one
thread sees the channel end. The role is held by whoever's token is in its claim (taken without waiting:
whoever finds it held leaves the reading to its holder) plus the state below; only the holder changes the
state, so it always says who reads. Each change is checked against ``TRANSITIONS`` and logged at debug level
under ``boss_sidecar.rpc.reading`` (stdlib ``logging``: nothing is written unless the host configures it).

Invariant, interrupts included: the role is never held by no one. A signal handler (Ctrl-C) raises in the
main thread only where the interpreter checks for it: on a call's return, a backward jump, a function's
entry. So the claim is taken with one call that both tests and sets it (``dict.setdefault``), and each
change stores claim, state and thread with no such point in between. A caller's thread holds the claim by
its thread ident; one handed on is held by the handover (the job that takes it up). Whatever an interrupt
cuts short, the claim still names who holds the role, and the interrupted caller gives back what is still
its own (``give_back``; see ``_CallerReading.recover``).
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


_FREE = R.FREE  # a module global: loaded with no check for signals
_CLAIM = 0  # the claim's one key


class ReadingRole:
    """The role, its state and the thread holding it. It starts held, HANDED to whoever starts reading."""

    __slots__ = ("_claim", "_name", "state", "thread")

    def __init__(self, name: str) -> None:
        self._name = name
        self._claim: dict[int, object] = {_CLAIM: None}  # the holder's token; no entry while the role is free
        self.state = R.HANDED
        self.thread: threading.Thread | None = None  # the thread reading (a READERS state), else None

    def take(self, state: Reading) -> bool:
        """Take the role if it is free, to read as ``state``; False (at once) if another holds it.

        An interrupt between the two steps leaves the claim naming this thread (see give_back)."""
        token = threading.get_ident()
        if self._claim.setdefault(_CLAIM, token) is not token:
            return False
        self._change(state, threading.current_thread(), token)
        return True

    def take_up(self, state: Reading, handover: object = None) -> bool:
        """Read as ``state`` with the role handed to this thread (only a role handed on is taken up: a free one
        is taken, see take). With ``handover``: False if the role is no longer held by it (taken up already:
        a handover queued twice, see _CallerReading.recover)."""
        if handover is not None and self._claim.get(_CLAIM) is not handover:
            return False
        if self.state is not R.HANDED:
            raise InvalidReadingTransition(
                f"{self._name}: reading role cannot go from {self.state} to {state}: only a role handed on is taken up"
            )
        self._change(state, threading.current_thread(), threading.get_ident())
        return True

    def hand(self, handover: object = None) -> None:
        """Let go of the role without freeing it: ``handover`` (a job for another thread) holds it until it is
        taken up, by another thread or by this one later."""
        self._change(R.HANDED, None, handover)

    def set_down(self) -> None:
        """Free the role (held)."""
        self._change(R.FREE, None, None)

    def end(self) -> None:
        """The channel ended: keep the role taken for good."""
        self._change(R.ENDED, None, R.ENDED)

    def reads_here(self) -> bool:
        """Whether the current thread holds the role and reads."""
        return self.thread is threading.current_thread()

    @property
    def holder(self) -> object:
        """The holder's token: a thread ident, a handover, ENDED; None for free (or handed to no one yet)."""
        return self._claim.get(_CLAIM)

    def give_back(self) -> bool:
        """After an interrupt: free the role if this thread still holds it, whatever its state says (a take, a
        read or a set-down cut short); True if it did. A role ended stays ended."""
        if self._claim.get(_CLAIM) != threading.get_ident():
            return False
        if self.state is R.FREE:  # a take cut short: claimed, the state not yet changed
            self._claim.pop(_CLAIM, None)
        else:
            self._change(R.FREE, None, None)
        return True

    def _change(self, new: Reading, thread: threading.Thread | None, holder: object) -> None:
        """Move to ``new``: claim, state and thread are stored with no point in between where a signal handler
        could run (plain stores; FREE is a module global)."""
        old = self.state
        if new not in TRANSITIONS[old]:
            raise InvalidReadingTransition(f"{self._name}: reading role cannot go from {old} to {new}")
        claim = self._claim
        if new is _FREE:
            self.state, self.thread = new, thread
            del claim[_CLAIM]
        else:
            claim[_CLAIM], self.state, self.thread = holder, new, thread
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "%s: reading role %s -> %s (%s)",
                self._name,
                old,
                new,
                threading.current_thread().name,
                extra={"endpoint": self._name, "old": str(old), "new": str(new)},
            )
