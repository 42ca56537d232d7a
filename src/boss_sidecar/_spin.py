"""When a waiting reader busy-waits for the peer's next message, learnt from how its last tries went.

Kept apart from ``rpc``: it knows nothing of channels, only of tries that found data or did not.
Polling pays on an idle machine (a thread woken from sleep on a virtual machine starts tens of
microseconds late) and costs dearly on a busy one: when every core is taken, the poll holds the
core the peer needs to answer, and the answer comes only once the poll gives up. A run of misses
says polling does not pay just now, so the reader sleeps through the next waits, twice as many
after each further miss (up to ``MAX_SKIPPED``), and polls again at once after a hit, like an
exponential backoff.
"""

from __future__ import annotations

MAX_SKIPPED = 64
"""Waits slept through after a run of misses, at most: one try in 65 while polling does not pay."""


class _SpinBudget:
    """How long the next wait busy-waits. Not locked: the lone waiter asks, and a lost update
    between two threads only shifts when the next try comes."""

    __slots__ = ("_budget", "_skip", "_skipped")

    def __init__(self, budget: float) -> None:
        self._budget = budget
        self._skip = 0  # waits to sleep through after the last miss (0: poll)
        self._skipped = 0  # of those, how many are left

    def next_wait(self) -> float:
        """Seconds to busy-wait for the wait about to start: the budget, or 0 while backing off."""
        if self._skipped:
            self._skipped -= 1
            return 0.0
        return self._budget

    def hit(self) -> None:
        """The busy-wait found data: keep polling."""
        self._skip = 0

    def miss(self) -> None:
        """The busy-wait found nothing: sleep through the next waits, twice as many as last time."""
        self._skip = min(MAX_SKIPPED, 2 * self._skip or 1)
        self._skipped = self._skip
