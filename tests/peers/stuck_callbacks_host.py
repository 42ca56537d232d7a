"""A host whose subscription callbacks are all blocked forever, and which exits without stop().

Run as ``python stuck_callbacks_host.py N``; prints ``ok <json>`` once N callbacks are blocked,
then ends its main thread: the interpreter's exit (the atexit stop) must not wait for them.
"""

from __future__ import annotations

import sys
import threading

from sidecar_support import logs_to_stderr, reply

from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import peer_config

FOREVER = 3600.0


def main() -> None:
    logs_to_stderr()
    count = int(sys.argv[1])
    entered = threading.Semaphore(0)

    def block(_sample: object) -> None:
        entered.release()
        threading.Event().wait(FOREVER)

    sidecar = Sidecar("stuck-at-exit", peer_config(), stop_timeout=1.0).start()
    for _ in range(count):
        sidecar.subscribe("stuck/exit", block)
    sidecar.put("stuck/exit", "x")
    sidecar.flush()
    for _ in range(count):
        assert entered.acquire(timeout=30)
    reply("ok", {"pid": sidecar.pid})


if __name__ == "__main__":
    main()
