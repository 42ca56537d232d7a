"""A host program for the host-death tests: brings its sidecar into one state, then waits to be killed.

Run as ``python fault_host.py STATE ZENOH_CONFIG_JSON`` with STATE one of running, starting, backoff,
stopping. Once the sidecar is in that state it prints one line ``{"state": ..., "workers": [...]}``
(every worker pid it had) and waits; the test then SIGKILLs it. Imports nothing of zenoh.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from boss_sidecar._process import WorkerProcess
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.states import SidecarState, StateChange
from boss_sidecar.template import TemplateBackend

LONG = 600.0
"""Longer than any test waits: the state must last until the host is killed."""


def report(sidecar: Sidecar, workers: list[int]) -> None:
    print(json.dumps({"state": str(sidecar.state), "workers": workers}), flush=True)


class Gate:
    """Exported to the hosted AsksBeforeStarting: lets it start once, then holds its replay."""

    def __init__(self, sidecar: Sidecar, workers: list[int]) -> None:
        self.armed = False
        self._sidecar = sidecar
        self._workers = workers

    def should_block(self, pid: int) -> bool:
        if not self.armed:
            return False
        self._workers.append(pid)
        report(self._sidecar, self._workers)
        return True


class HoldsAfterSigterm(TemplateBackend):
    """Sends signals as usual (to workers forked from the template, the default), but after SIGTERM
    reports and holds the stop there (no SIGKILL follows)."""

    def __init__(self) -> None:
        self.on_sigterm: Any = None

    def kill(self, process: WorkerProcess, signum: int) -> None:
        super().kill(process, signum)
        if signum == signal.SIGTERM and self.on_sigterm is not None:
            self.on_sigterm()
            threading.Event().wait(LONG)


def freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and return once it is stopped (bounded)."""
    os.kill(pid, signal.SIGSTOP)
    process = psutil.Process(pid)
    deadline = time.monotonic() + 10
    while process.status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
        time.sleep(0.005)


def on_state(wanted: SidecarState, then: Any) -> Any:
    def hook(change: StateChange) -> None:
        if change.new == wanted:
            then()

    return hook


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the worker inherits it: peers.*
    state, config = sys.argv[1], json.loads(sys.argv[2])
    backend = HoldsAfterSigterm()
    sidecar = Sidecar(
        "fault-host",
        config,
        backend=backend,
        start_timeout=LONG,
        backoff_initial=LONG,
        backoff_max=LONG,
        max_restarts=100,
    )
    sidecar.start()
    assert sidecar.pid is not None
    workers = [sidecar.pid]
    if state == "running":
        report(sidecar, workers)
    elif state == "starting":
        gate = Gate(sidecar, workers)
        sidecar.host("peers.fault_objects:AsksBeforeStarting", sidecar.expose(gate))
        gate.armed = True
        threading.Thread(target=sidecar.restart, daemon=True).start()  # the replay blocks in the new worker
    elif state == "backoff":
        sidecar.on_state_change(on_state(SidecarState.BACKOFF, lambda: report(sidecar, workers)))
        restarted = threading.Event()
        sidecar.on_restart(lambda _number, _reason: restarted.set())
        os.kill(workers[0], signal.SIGKILL)  # the first restart is immediate ...
        restarted.wait(LONG)
        assert sidecar.pid is not None
        workers.append(sidecar.pid)
        os.kill(sidecar.pid, signal.SIGKILL)  # ... the second waits backoff_initial
    elif state == "stopping":
        # Frozen as the stop begins, the worker ignores the stop request; the host escalates to SIGTERM
        # (pending on a stopped process) and is killed right then.
        sidecar.on_state_change(on_state(SidecarState.STOPPING, lambda: freeze(workers[0])))
        backend.on_sigterm = lambda: report(sidecar, workers)
        threading.Thread(target=sidecar.stop, kwargs={"timeout": 2.0}, daemon=True).start()
    else:
        raise SystemExit(f"unknown state {state!r}")
    threading.Event().wait(LONG)


if __name__ == "__main__":
    main()
