"""A HERO for the sidecar tests: hosted in a sidecar's worker, reached by a RemoteHERO elsewhere."""

from __future__ import annotations

from heros import LocalHERO


class Thermometer(LocalHERO):
    """A LocalHERO with a method, a method with arguments and attributes."""

    unit: str = "C"
    setpoint: float = 20.0

    def read(self) -> float:
        return self.setpoint + 1.5

    def add(self, a: int, b: int) -> int:
        return a + b
