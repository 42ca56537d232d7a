"""A HEROS client (not a host: it may import zenoh): finds a HERO by name and uses it.

Run as ``python heros_remote_client.py NAME`` with HEROS_ZENOH_CONFIG set to a loopback
configuration. Prints ``ok <json>`` with what it read, then leaves through ``os._exit`` (a
RemoteHERO declares a callback subscriber, so a normal exit can hang: zenoh-python #434).
"""

from __future__ import annotations

import json
import os
import sys
import time

from heros import RemoteHERO

DISCOVERY_BOUND = 20.0


def find(name: str) -> RemoteHERO:
    """Retry discovery (bounded) until the session has connected and the HERO answers."""
    deadline = time.monotonic() + DISCOVERY_BOUND
    while True:
        try:
            return RemoteHERO(name)
        except NameError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    remote = find(sys.argv[1])
    seen = {"read": remote.read(), "add": remote.add(2, 3), "unit": remote.unit}
    remote.setpoint = 30.0
    seen["read_after_set"] = remote.read()
    seen["tags"] = sorted(remote._hero_tags)
    remote._destroy_hero()
    print("ok", json.dumps(seen), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
