"""A zenoh router on tcp/127.0.0.1:PORT in its own process (not a host, so it may import zenoh).

Run as ``python zenoh_router.py PORT``: prints ``ready "<zid>"``, then routes until stdin closes.
It leaves through ``os._exit`` after closing the session, so no zenoh exit hang can keep it alive.
"""

from __future__ import annotations

import json
import os
import sys

import zenoh
from sidecar_support import reply

from boss_sidecar.testing import router_config


def main() -> None:
    config = zenoh.Config.from_json5(json.dumps(router_config(int(sys.argv[1]))))
    session = zenoh.open(config)
    reply("ready", str(session.zid()))
    sys.stdin.read()
    session.close()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
