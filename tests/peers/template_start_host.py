"""A host that starts the template first thing, as the launcher does.

Prints one JSON line: the heavy modules it had imported when the template was already running
(none expected), the template's pid then, and the template its sidecar's worker was forked from.
"""

from __future__ import annotations

import json
import sys

import psutil

from boss_sidecar import template

HEAVY = ("structlog", "asyncio", "zenoh", "boss_sidecar.supervisor", "boss_sidecar.sidecar", "boss_sidecar.rpc")


def _running_template() -> int | None:
    for child in psutil.Process().children():
        if "boss_sidecar.worker.template" in child.cmdline():
            return child.pid
    return None


def main() -> None:
    template.start()
    from boss_sidecar.testing import peer_config, wait_until

    early = wait_until(_running_template, what="the template to be started")
    imported = sorted(name for name in HEAVY if name in sys.modules)
    from boss_sidecar.sidecar import Sidecar

    with Sidecar("started-early", peer_config()) as sidecar:
        forked_by = psutil.Process(sidecar.pid).ppid()
        print(json.dumps({"imported": imported, "early": early, "forked_by": forked_by}), flush=True)


if __name__ == "__main__":
    main()
