"""A host that uses every feature of its sidecar, then checks it never imported zenoh.

Run as ``python sidecar_every_feature_host.py``; prints ``ok <json of what it saw>`` and exits 0,
or fails an assertion.
"""

from __future__ import annotations

import sys

from sidecar_support import BOUND, Collector, logs_to_stderr, reply

import boss_sidecar
from boss_sidecar.samples import Query, QueryReply
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import peer_config


class Doubler:
    def double(self, value: int) -> int:
        return value * 2


def main() -> None:
    logs_to_stderr()
    seen: dict[str, object] = {"version": boss_sidecar.__version__}
    with Sidecar("every-feature", peer_config()) as sidecar:
        samples, tokens = Collector(), Collector()
        sidecar.subscribe("ef/k", samples)
        iterated = sidecar.subscribe("ef/k")
        sidecar.liveliness_subscribe("ef/alive/**", tokens)

        def answer(query: Query) -> object:
            return [QueryReply("ef/q/a", "A")] if query.parameters else "plain"

        sidecar.queryable("ef/q/**", answer)
        sidecar.put("ef/k", "one", encoding="text/plain", priority="data_high", attachment=b"x")
        sidecar.delete("ef/k")
        seen["samples"] = [(s.kind, s.text()) for s in samples.wait(2)]
        seen["iterated"] = iterated.recv(timeout=BOUND).text()
        seen["get"] = [r.text() for r in sidecar.get("ef/q/item")] + [r.text() for r in sidecar.get("ef/q/**?p")]
        token = sidecar.liveliness_token("ef/alive/me")
        seen["token"] = tokens.wait(1)[0].key_expr
        seen["alive"] = sidecar.liveliness_get("ef/alive/**")
        token.close()
        counter = sidecar.host("sidecar_objects:Counter", 1)
        counter.value = 10
        seen["hosted"] = [counter.increment(), counter.value, counter.label]
        caller = sidecar.host(
            {"_id": "caller", "classname": "sidecar_objects.Caller", "arguments": {}}, sidecar.expose(Doubler())
        )
        seen["callback"] = caller.ask(20)
        seen["info"] = sorted(sidecar.info())
        seen["healthy"] = sidecar.health().healthy
        sidecar.flush()
        sidecar.restart()
        seen["after_restart"] = counter.increment()
    loaded = sorted(name for name in sys.modules if name == "zenoh" or name.startswith("zenoh."))
    assert not loaded, f"the host imported {loaded}"
    reply("ok", seen)


if __name__ == "__main__":
    main()
