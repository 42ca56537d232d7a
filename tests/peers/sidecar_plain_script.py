"""A plain script, no ``if __name__ == "__main__"`` guard: starting a sidecar must still just work."""

from sidecar_support import logs_to_stderr, reply

from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import peer_config

logs_to_stderr()
sidecar = Sidecar("plain-script", peer_config()).start()
sidecar.queryable("plain/q", lambda query: "answered")
reply("ok", [r.text() for r in sidecar.get("plain/q")])
sidecar.stop()
