"""A host whose worker declared a callback subscriber and queryable, then idles or simply ends.

Run as ``python sidecar_idle_host.py MODE``; prints ``ready [worker pid, its create time]``, then
with MODE ``wait`` blocks until stdin closes, with MODE ``leave`` ends at once. It never calls
stop(): the atexit hook has to stop the worker (zenoh-python #434 would otherwise hang the exit).
"""

from __future__ import annotations

import sys

import psutil
from sidecar_support import logs_to_stderr, reply

from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import peer_config

logs_to_stderr()
sidecar = Sidecar("idle-host", peer_config()).start()
sidecar.subscribe("idle/k", lambda sample: None)
sidecar.queryable("idle/q", lambda query: "here")
sidecar.put("idle/k", "x")
assert [r.text() for r in sidecar.get("idle/q")] == ["here"]
pid = sidecar.pid
assert pid is not None
reply("ready", [pid, psutil.Process(pid).create_time()])
if sys.argv[1] == "wait":
    sys.stdin.read()
