"""SIGTERM and SIGKILL from outside, back to back, to the workers of several sidecars: is every end noticed?

Usage: python scripts/outside_signals.py [--sidecars N] [--rounds N] [--fresh]
Each round signals every sidecar's worker at once (SIGKILL every third round, SIGTERM otherwise);
each sidecar (``restart="always"``) must restart within the bound. Prints the rounds in which a
worker's end went unnoticed and exits 1 if there was one. Run it beside CPU load: before the
worker's main thread slept on the signal wakeup fd, about 1 SIGTERM in 60 was taken by another
thread and its worker lived on unnoticed (tests/test_faults_races.py has the deterministic case).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from functools import partial

BOUND = 20.0
"""Seconds a sidecar may take to notice its worker's end and restart: far beyond what it needs."""


def _all_past(counts: list[int], before: list[int]) -> bool:
    return all(now > then for now, then in zip(counts, before, strict=True))


def main() -> int:
    from boss_sidecar import Sidecar, SidecarState
    from boss_sidecar.testing import peer_config, wait_until

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sidecars", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=90)
    parser.add_argument("--fresh", action="store_true", help="workers as fresh interpreters, not template forks")
    options = parser.parse_args()
    restarts = [0] * options.sidecars
    changed = threading.Condition()

    def counter(index: int) -> Callable[[int, str], None]:
        def count(_incarnation: int, _reason: str) -> None:
            with changed:
                restarts[index] += 1
                changed.notify_all()

        return count

    sidecars: list[Sidecar] = []
    unnoticed: list[str] = []
    try:
        for index in range(options.sidecars):
            name = f"outside-signals-{index}"
            sidecar = Sidecar(
                name,
                peer_config(),
                restart="always",
                max_restarts=1_000_000,
                backoff_initial=0.0,
                worker_template=not options.fresh,
            )
            sidecars.append(sidecar.start())
            sidecars[-1].on_restart(counter(index))
        for number in range(options.rounds):
            signum = signal.SIGKILL if number % 3 == 0 else signal.SIGTERM
            before = list(restarts)
            pids = [pid for sidecar in sidecars if (pid := sidecar.pid) is not None]
            for pid in pids:
                os.kill(pid, signum)
            with changed:
                changed.wait_for(partial(_all_past, restarts, before), BOUND)
            missed = [pid for pid, now, then in zip(pids, restarts, before, strict=True) if now == then]
            if missed:
                unnoticed.append(f"round {number}: {signal.Signals(signum).name} to {missed} unnoticed")
                print(unnoticed[-1], flush=True)
                for pid in missed:  # go on: SIGKILL cannot be missed
                    os.kill(pid, signal.SIGKILL)
            wait_until(lambda: all(car.state == SidecarState.RUNNING for car in sidecars), BOUND, "all running")
    finally:
        for sidecar in sidecars:
            sidecar.stop(timeout=5)
    signals = options.sidecars * options.rounds
    print(f"{len(unnoticed)} of {options.rounds} rounds had an unnoticed end ({signals} signals)")
    return 1 if unnoticed else 0


if __name__ == "__main__":
    sys.exit(main())
