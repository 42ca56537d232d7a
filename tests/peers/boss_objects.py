"""Plain classes as BOSS users write them (no HEROS in sight): heros-boss's factory makes them HEROs."""

from __future__ import annotations

import asyncio
import os
from typing import Any


class Multimeter:
    """A plain instrument class with an argument."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.unit = "V"

    def read(self) -> float:
        return 1.5 + self.offset

    def worker_pid(self) -> int:
        return os.getpid()


class Relay:
    """Takes another HERO (a ``$name`` argument, a RemoteHERO) and an event loop (``@_boss_loop``)."""

    def __init__(self, meter: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.meter = meter
        self.loop = loop

    def relayed(self) -> float:
        value: float = self.meter.read()
        return value

    def on_loop(self) -> bool:
        """True when the loop given as ``@_boss_loop`` runs coroutines in this worker."""

        async def here() -> int:
            return os.getpid()

        return asyncio.run_coroutine_threadsafe(here(), self.loop).result(5) == os.getpid()


class Thermistor:
    """A polled datasource: BOSS publishes ``temperature`` every ``interval`` seconds."""

    def __init__(self) -> None:
        self.temperature = 21.25

    def read(self) -> float:
        return self.temperature


class CrashesOnce:
    """Kills its worker while being built the first time (``marker`` does not exist yet)."""

    def __init__(self, marker: str) -> None:
        if not os.path.exists(marker):
            with open(marker, "w"):
                pass
            os._exit(1)

    def read(self) -> str:
        return "risen"
