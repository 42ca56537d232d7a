"""A HEROS client in its own process (it may import zenoh): runs a script of steps against BOSS HEROs.

``python boss_client.py PORT STEPS_JSON``; HEROS_ZENOH_CONFIG is set to a client of the router on
127.0.0.1:PORT. Steps: ``["call", hero, method, args]``, ``["observe", hero]`` (one datasource
event, through a DatasourceObserver), ``["absent", hero]`` (after the router link is up, no HERO of
that name answers), ``["tags", hero, realm]`` (the tags of a HERO of that realm).
Prints ``ok <json list of results>``, then leaves through ``os._exit``
(HEROS declares callback subscribers, so a normal exit can hang: zenoh-python #434).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from boss_sidecar.testing import client_config

DISCOVERY_BOUND = 20.0


def main() -> None:
    port, steps = int(sys.argv[1]), json.loads(sys.argv[2])
    os.environ["HEROS_ZENOH_CONFIG"] = json.dumps(client_config(port))
    from heros import RemoteHERO
    from heros.datasource.datasource import DatasourceObserver
    from heros.zenoh import session_manager

    session = session_manager.request_session(object(), "heros")
    deadline = time.monotonic() + DISCOVERY_BOUND
    while not list(session.info.routers_zid()):
        if time.monotonic() > deadline:
            raise TimeoutError("no router link")
        time.sleep(0.02)

    heroes: dict[tuple[str, str], Any] = {}

    def find(name: str, realm: str = "heros") -> Any:
        end = time.monotonic() + DISCOVERY_BOUND
        while (name, realm) not in heroes:
            try:
                heroes[name, realm] = RemoteHERO(name, realm=realm)
            except NameError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)
        return heroes[name, realm]

    results: list[Any] = []
    for step in steps:
        if step[0] == "call":
            results.append(getattr(find(step[1]), step[2])(*step[3]))
        elif step[0] == "observe":
            seen = threading.Event()
            values: list[Any] = []

            def on_data(source: str, data: Any, values: list[Any] = values, seen: threading.Event = seen) -> None:
                values.append([source, [value.raw_value for value in data]])
                seen.set()

            observer = DatasourceObserver(step[1])
            observer.register_observable_data_callback(on_data)
            if not seen.wait(DISCOVERY_BOUND):
                raise TimeoutError(f"no data from {step[1]}")
            results.append(values[0])
        elif step[0] == "tags":
            results.append(sorted(find(step[1], step[2])._hero_tags))
        elif step[0] == "absent":
            try:
                RemoteHERO(step[1])
            except NameError:
                results.append(True)
            else:
                results.append(False)
        else:
            raise ValueError(f"unknown step {step!r}")
    print("ok", json.dumps(results), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
