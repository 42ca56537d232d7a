"""A BOSS HERO in a sidecar's worker, built by heros-boss's own factory.

The launcher hosts one ``BossHero`` per BOSS document in a worker of its own (BOSS's isolation).
It does what BOSS's ``boss.worker.Worker`` does: an asyncio event loop is ``_loop`` (what
``@_boss_loop`` arguments become, and what polled datasources run on), and the HERO is built by
``WorkerConfigurationDocument(document).build_hero_for_worker(boss_name, self, realm)``, so
heroization, ``$name`` arguments, datasources, decorators and driver wrapping are BOSS's own.
The loop runs on a thread of this worker once the HERO is built (BOSS too builds before running it).
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from typing import Any

from boss.configuration import WorkerConfigurationDocument

from boss_sidecar.logs import get_logger

_log = get_logger("boss_sidecar.worker.heroes")
LOOP_STOP_BOUND = 2.0
"""Seconds the event loop's thread may take to finish after a stop."""
NAME_WAIT = 10.0
"""Seconds a ``$name`` argument waits for its HERO: as long as BOSS's ten tries, a second apart."""
NAME_POLL = 0.05
"""Seconds between two looks for that HERO (discovery has no event to wait on); BOSS looks every second."""


def remote_hero(name: str, realm: str, wait: float = NAME_WAIT) -> Any:
    """BOSS's ``$name`` argument: a ``RemoteHERO`` of ``name``, as soon as that HERO answers discovery.

    heros-boss's factory tries once a second, so a HERO started beside the one it names (BOSS starts
    them all at once) waits a whole second for it; this looks every 50 ms, within the same bound.
    """
    from heros import RemoteHERO  # noqa: PLC0415 - imported where the factory would import it

    deadline = time.monotonic() + wait
    while True:
        try:
            return RemoteHERO(name, realm)
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise NameError(f"Could not get HERO {name} within {wait:g} s: {exc}") from exc
        time.sleep(NAME_POLL)


class BossHero:
    """One HERO and the event loop it was given; ``_teardown`` releases both, as BOSS's worker stop does."""

    def __init__(self, document: dict[str, Any], boss_name: str, realm: str = "heros", boss: Any = None) -> None:
        self._loop = asyncio.new_event_loop()
        config = WorkerConfigurationDocument(copy.deepcopy(document))
        if boss is not None:  # the management HERO: its calls go back to the BOSS in the launcher
            config["arguments"]["boss"] = boss
        for key, value in config.get("arguments", {}).items():  # before the factory, which would wait 1 s a try
            if isinstance(value, str) and value.startswith("$"):
                config["arguments"][key] = remote_hero(value[1:], realm)
        self.name: str = config["_id"]
        self.classname: str = config["classname"]
        try:
            self._hero = config.build_hero_for_worker(boss_name, self, realm)
        except BaseException:
            self._loop.close()
            raise
        self._thread = threading.Thread(target=self._run_loop, name=f"boss-loop-{self.name}", daemon=True)
        self._thread.start()
        _log.info("HERO built", hero=self.name, classname=self.classname, realm=realm)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def describe(self) -> dict[str, Any]:
        """The HERO's name and class, and whether its event loop runs."""
        return {"name": self.name, "classname": self.classname, "loop_running": self._loop.is_running()}

    def _teardown(self) -> None:
        """The HERO's own ``_teardown``, then ``_destroy_hero``; then the loop stops."""
        hero = self._hero
        try:
            hook = getattr(hero, "_teardown", None)
            if callable(hook):
                hook()
            hero._destroy_hero()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(LOOP_STOP_BOUND)
