"""The management HERO of ``boss-sidecar boss --expose``: BOSS's remote API, served by the launcher.

heros-boss exposes its BOSS object as a HERO named ``--name`` whose methods (those
``boss.boss.BOSSRemote`` calls) manage the HEROs. Here the BOSS lives in the launcher, which never
imports zenoh: this class is built into a HERO in a worker (by heros-boss's factory, like any
other) and each method calls back into the launcher through the sidecar's channel.
"""

from __future__ import annotations

from typing import Any


class BossManagement:
    """BOSS's remote methods; ``boss`` is the launcher's BOSS, reached through the channel."""

    def __init__(self, boss: Any) -> None:
        self._boss = boss

    def status(self) -> dict[str, Any]:
        """``{name: {"config": document, "status": "running" | "stopped" | "failed", ...}}`` with supervision facts."""
        result: dict[str, Any] = self._boss.status()
        return result

    def start_hero(self, name: str) -> None:
        self._boss.start_hero(name)

    def stop_hero(self, name: str) -> None:
        self._boss.stop_hero(name)

    def restart_hero(self, name: str) -> None:
        self._boss.restart_hero(name)

    def add_hero(self, config: dict[str, Any], auto_start: bool = True) -> None:
        self._boss.add_hero(config, auto_start)

    def remove_hero(self, name: str) -> None:
        self._boss.remove_hero(name)

    def start_all(self) -> None:
        self._boss.start_all()

    def stop_all(self) -> None:
        self._boss.stop_all()

    def refresh_hero_sources(self, auto_start: bool = True) -> None:
        self._boss.refresh_hero_sources(auto_start)
