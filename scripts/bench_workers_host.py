"""The boss-sidecar host bench_workers.py measures: N sidecars, each hosting one HERO.

``python bench_workers_host.py PORT N MODE BOSS_NAME DOCUMENTS``; MODE is ``template`` or ``fresh``.
It prints ``{"ready": ...}`` once every HERO is built; then on stdin ``kill I`` kills sidecar I's
worker with SIGKILL and prints the seconds until it was restarted and had rebuilt its HERO; any
other line stops the sidecars. As a program should, and as the launcher does, it starts the
template before it imports the rest (``boss_sidecar.template`` imports only the standard library):
the template imports zenoh and HEROS on one core while this process imports the sidecar on the other.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from boss_sidecar import template

BUILDER = "bench_workers_hero:BossBuiltHero"
BOUND = 120.0
"""No wait in here is longer than this."""


def main(port: int, count: int, mode: str, boss_name: str, documents_file: str) -> None:
    use_template = mode == "template"
    if use_template:
        template.preload(BUILDER)  # starts the template in the background, before the imports below

    from boss_sidecar.sidecar import Sidecar
    from boss_sidecar.testing import client_config

    documents = json.loads(Path(documents_file).read_text())["rows"]
    sidecars: list[Sidecar] = [
        Sidecar(f"hero-{index}", client_config(port), worker_template=use_template, log_level="error")
        for index in range(count)
    ]
    errors: list[str] = []

    def bring_up(sidecar: Sidecar, document: dict[str, Any]) -> None:
        try:
            sidecar.start()
            sidecar.host(BUILDER, document=document["doc"], boss_name=boss_name)
        except Exception as exc:
            errors.append(f"{sidecar.name}: {exc}")

    threads = [threading.Thread(target=bring_up, args=pair) for pair in zip(sidecars, documents, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    print(json.dumps({"ready": not errors, "errors": errors}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] != ["kill"]:
            break
        sidecar = sidecars[int(words[1])]
        restarted = threading.Event()
        sidecar.on_restart(lambda _incarnation, _reason, done=restarted: done.set())
        started = time.monotonic()
        os.kill(sidecar.pid or 0, signal.SIGKILL)
        ok = restarted.wait(BOUND)
        print(json.dumps({"restarted": ok, "seconds": time.monotonic() - started}), flush=True)
    stoppers = [threading.Thread(target=sidecar.stop, kwargs={"timeout": 5}) for sidecar in sidecars]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join(BOUND)
    os._exit(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
