"""Long chaos run: SIGKILL the worker many times under concurrent calls and a subscription stream.

Usage: python scripts/chaos.py [--kills N] [--threads N] [--tasks N] [--max-gap S] [--seed N]
Exits 0 when every call ended with its own result or a SidecarError, none hung, the stream came
back after every restart and no worker was left; prints the report either way. The CI-sized run
is tests/test_faults_chaos.py.

``--lifecycle N`` runs N rounds of restart() and stop() racing kills and Ctrl-C during stop()
instead (``--actions`` picks some of them): never two workers at once, never FAILED, every
interrupted stop finished by the next stop(), every call its own result or a SidecarError.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> int:
    import logging

    from peers.fault_chaos import LIFECYCLE_ACTIONS, ChaosSettings, run_chaos, run_lifecycle_chaos

    logging.basicConfig(stream=sys.stderr, level=logging.ERROR)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200, help="kill rounds (default 200)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument(
        "--max-gap", type=float, default=0.5, help="seconds between a restart and the next kill, at most"
    )
    parser.add_argument("--starting-kill-ratio", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--lifecycle", type=int, default=0, help="rounds of restart/stop/Ctrl-C racing kills")
    parser.add_argument("--actions", nargs="+", choices=LIFECYCLE_ACTIONS, default=list(LIFECYCLE_ACTIONS))
    options = parser.parse_args()
    if options.lifecycle:
        lifecycle = run_lifecycle_chaos(options.lifecycle, options.seed, tuple(options.actions))
        print(f"{sum(lifecycle.rounds.values())} of {options.lifecycle} rounds in {lifecycle.seconds:.1f}s: ")
        print(f"  {dict(lifecycle.rounds)}")
        print(f"most workers alive at once: {lifecycle.most_workers}; calls ok: {lifecycle.calls_ok}")
        for problem in lifecycle.problems():
            print("PROBLEM:", problem)
        return 1 if lifecycle.problems() else 0
    settings = ChaosSettings(
        kills=options.kills,
        threads=options.threads,
        tasks=options.tasks,
        max_gap=options.max_gap,
        starting_kill_ratio=options.starting_kill_ratio,
        seed=options.seed,
    )
    report = asyncio.run(run_chaos(settings))
    problems = report.problems(settings)
    kills = f"{report.sigkills} SIGKILLs ({report.starting_kills} while starting)"
    print(f"{report.rounds} rounds, {kills} in {report.seconds:.1f}s")
    print(f"calls: {report.calls_ok} ok, failed: {dict(report.failures)}")
    print(f"stream back after {report.stream_back} restarts; {len(report.worker_pids)} workers")
    print(f"workers left running: {report.leftover_workers}")
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
