"""The HERO configuration bench_workers.py runs, imported only where HEROs live (BOSS's and the sidecars' workers).

``Plain`` is the small plain class of the configuration; heros-boss's factory makes it a HERO.
"""

from __future__ import annotations


class Plain:
    """A small plain class, as a lab's simplest driver: a value and a method."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def ping(self) -> int:
        return self.value
