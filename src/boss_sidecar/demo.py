"""A tiny instrument to host in a sidecar, so the default launcher config has something to run."""

from __future__ import annotations

from typing import Any


class Counter:
    """Counts and echoes: enough to see hosting, calls and attribute access work end to end."""

    def __init__(self, name: str = "counter", start: int = 0, step: int = 1) -> None:
        self.name = name
        self.value = start
        self.step = step

    def increment(self, times: int = 1) -> int:
        """Add ``step`` ``times`` times; returns the new value."""
        self.value += self.step * times
        return self.value

    def reset(self, value: int = 0) -> None:
        self.value = value

    def echo(self, payload: Any) -> Any:
        """Return what was sent: a round trip through the worker."""
        return payload
