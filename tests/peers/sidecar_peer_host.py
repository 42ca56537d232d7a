"""A second host process with its own sidecar, driven over stdin/stdout (see LineProgram).

Run as ``python sidecar_peer_host.py ZENOH_CONFIG_JSON``. It subscribes to ``twohosts/to_b/**``,
answers queries on ``twohosts/b/**`` and then obeys one command per line: ``put KEY N``
(payloads "0" to "N-1", then flush), ``probes`` (how many samples on a ``.../probe`` key came),
``wait N`` (the first N other samples), ``get SELECTOR``, ``info``, ``stop``. Each reply is a
``<command> <json>`` line.
"""

from __future__ import annotations

import json
import sys

from sidecar_support import Collector, logs_to_stderr, reply

from boss_sidecar.samples import Query, Sample
from boss_sidecar.sidecar import Sidecar


def main() -> None:
    logs_to_stderr()
    sidecar = Sidecar("peer-host", json.loads(sys.argv[1])).start()
    probes, received = Collector(), Collector()

    def on_sample(sample: Sample) -> None:
        (probes if sample.key_expr.endswith("/probe") else received)(sample)

    def answer(query: Query) -> str:
        return f"b answers {query.parameters}"

    sidecar.subscribe("twohosts/to_b/**", on_sample)
    sidecar.queryable("twohosts/b/**", answer)
    reply("ready", sidecar.info()["zid"])
    for line in sys.stdin:
        command, *words = line.split()
        if command == "put":
            for index in range(int(words[1])):
                sidecar.put(words[0], str(index))
            sidecar.flush()
            reply("put")
        elif command == "probes":
            reply("probes", len(probes.items))
        elif command == "wait":
            reply("wait", [[s.key_expr, s.text()] for s in received.wait(int(words[0]))])
        elif command == "get":
            replies = sidecar.get(words[0], timeout=5)
            reply("get", [[r.ok, r.key_expr, r.text()] for r in replies])
        elif command == "info":
            reply("info", sidecar.info())
        elif command == "stop":
            sidecar.stop()
            reply("stop", "zenoh" in sys.modules)
            return


if __name__ == "__main__":
    main()
