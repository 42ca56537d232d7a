"""Put loss when the publishing worker dies mid-burst: how many puts were lost, how many reported.

Usage: python scripts/put_loss.py [--puts N] [--fault kill|freeze] [--rounds N]
A burst of N puts (congestion control ``block``) goes from one sidecar to a subscriber in a second,
stable sidecar; a third of the way in, the publisher's worker is SIGKILLed (``kill``) or frozen
until the heartbeat replaces it (``freeze``). Prints, per round: received, lost (never received),
reported (puts the publisher said were of unknown fate or lost, through flush()), and whether the
received ones came in order. The figures for FAULTS.md and the issue's closing note come from here.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from boss_sidecar import Sidecar, SidecarError
from boss_sidecar.testing import free_port, peer_config
from peers.fault_support import Numbers

KEY = "putloss/stream"
BOUND = 60.0


def _reported(error: SidecarError) -> int:
    """Puts an error reports as lost or of unknown fate (both this version's and the old wording)."""
    count = getattr(error, "count", None)
    if isinstance(count, int):
        return count
    return sum(int(number) for number in re.findall(r"(\d+) puts", str(error)))


def one_round(puts: int, fault: str) -> tuple[int, int, int, bool]:
    port = free_port()
    subscriber = Sidecar("putloss-sub", peer_config(port)).start()
    publisher = Sidecar(
        "putloss-pub", peer_config(connect_ports=(port,)), heartbeat_interval=0.5, heartbeat_timeout=2.0
    ).start()
    received = Numbers()
    reported = 0
    try:
        subscriber.subscribe(KEY, received)
        publisher.put(KEY, "-1", congestion_control="block")
        publisher.flush()
        received.wait_for(-1, BOUND)
        received.seen.clear()
        for number in range(puts):
            if number == puts // 3:
                pid = publisher.pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
            while True:
                try:
                    publisher.put(KEY, str(number), congestion_control="block")
                    break
                except SidecarError as exc:
                    reported += _reported(exc)
        for _ in range(2):
            try:
                publisher.flush(timeout=BOUND)
            except SidecarError as exc:
                reported += _reported(exc)
        received.wait_for(puts - 1, BOUND)
        seen = list(received.seen)
    finally:
        publisher.stop()
        subscriber.stop()
    in_order = all(a < b for a, b in itertools.pairwise(seen))
    return len(set(seen)), puts - len(set(seen)), reported, in_order


def main() -> int:
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=60_000)
    parser.add_argument("--fault", choices=("kill", "freeze"), default="kill")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    for number in range(options.rounds):
        got, lost, reported, in_order = one_round(options.puts, options.fault)
        print(
            f"round {number + 1} ({options.fault}): {options.puts} puts, received {got}, lost {lost}, "
            f"reported {reported}, in order: {in_order}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
