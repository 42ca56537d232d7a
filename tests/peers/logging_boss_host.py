"""A service that builds its BOSS in Python (``boss_sidecar.boss.BOSS``): one HERO up, one document that
fails to build, then close. How it logs is argv[1]:

- ``none``: configures nothing; must print nothing at all;
- ``basic``: ``logging.basicConfig(level=INFO)``; prints, as one JSON line, what its handler received.

Run with ``tests`` on PYTHONPATH, so the worker imports ``peers.boss_objects`` as a user's HERO class.
"""

from __future__ import annotations

import sys

from logging_host import print_records

from boss_sidecar.boss import BOSS
from boss_sidecar.testing import peer_config, wait_until

METER = {"_id": "meter", "classname": "peers.boss_objects.Multimeter", "arguments": {"offset": 1.0}}
BROKEN = {"_id": "broken", "classname": "peers.boss_objects.NoSuchClass", "arguments": {}}
BOUND = 60.0


def embed() -> int:
    """The service's work; returns the HERO worker's pid."""
    boss = BOSS("logged", [], zenoh=peer_config(listen_port=0), stop_timeout=5.0)  # each worker its own port
    try:
        boss.add_hero(METER)
        boss.add_hero(BROKEN)

        def settled() -> bool:
            health = {entry["name"]: entry for entry in boss.health()}
            return bool(health["meter"]["healthy"]) and health["broken"]["error"] is not None

        wait_until(settled, BOUND, "meter built and broken failed")
        pid: int = boss.status()["meter"]["pid"]
    finally:
        boss.close()
    return pid


def main() -> None:
    if sys.argv[1] == "none":
        embed()
    else:
        print_records(embed)


if __name__ == "__main__":
    main()
