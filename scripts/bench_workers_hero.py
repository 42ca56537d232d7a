"""The HERO configuration bench_workers.py runs, imported only where HEROs live (BOSS, sidecar workers).

``Plain`` is the small plain class of the configuration; heros-boss's factory makes it a HERO.
``BossBuiltHero`` is what a sidecar hosts: in the worker it builds the same document's HERO with
heros-boss's factory (``WorkerConfigurationDocument.build_hero_for_worker``), as BOSS's worker does.
"""

from __future__ import annotations

from typing import Any

from boss.configuration import WorkerConfigurationDocument


class Plain:
    """A small plain class, as a lab's simplest driver: a value and a method."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def ping(self) -> int:
        return self.value


class _NoLoop:
    """The worker object the factory asks for ``@_boss_loop`` arguments; this configuration has none."""

    _loop = None


class BossBuiltHero:
    """Builds the HERO of a BOSS document in the sidecar's worker, on the worker's zenoh session."""

    def __init__(self, document: dict[str, Any], boss_name: str = "bench") -> None:
        self.hero = WorkerConfigurationDocument(document).build_hero_for_worker(boss_name, _NoLoop())

    def ping(self) -> int:
        result: int = self.hero.ping()
        return result

    def _teardown(self) -> None:
        self.hero._destroy_hero()
