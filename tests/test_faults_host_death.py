"""Host death in each supervisor state: the worker notices (channel EOF, parent-death signal, or the
kernel's SIGHUP and SIGCONT to its orphaned process group) and is gone within a second."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from boss_sidecar.testing import peer_config, wait_until
from peers.fault_support import BOUND, worker_gone, workers_started_by

HOST = Path(__file__).parent / "peers" / "fault_host.py"
WORKER_EXIT_BOUND = 1.0
"""The promise under test: no worker outlives its host by more than this."""


def _state_line(host: subprocess.Popen[str]) -> dict[str, object]:
    """The host program's one report line, once it is in the state (bounded)."""
    assert host.stdout is not None
    ready, _, _ = select.select([host.stdout], [], [], BOUND)
    assert ready, f"the host did not reach its state within {BOUND:g}s"
    line = host.stdout.readline()
    assert line, f"the host ended early with code {host.poll()}"
    report: dict[str, object] = json.loads(line)
    return report


@pytest.mark.parametrize(
    ("state", "alive_status"),
    [
        ("starting", None),
        ("running", None),
        ("backoff", None),
        ("stopping", psutil.STATUS_STOPPED),
    ],
)
def test_no_worker_outlives_a_host_killed_in_each_state(state: str, alive_status: str | None) -> None:
    """SIGKILL the host while its sidecar is starting, running, backing off or stopping a frozen worker."""
    host = subprocess.Popen(
        [sys.executable, str(HOST), state, json.dumps(peer_config())],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    workers: list[int] = []
    try:
        report = _state_line(host)
        assert report["state"] == state
        workers = [int(pid) for pid in report["workers"]]  # type: ignore[attr-defined]
        running = [pid for pid in workers if not worker_gone(pid)]
        if state == "backoff":
            assert running == []  # between two workers: the point is that none appears later
        else:
            assert running == [workers[-1]]
            if alive_status is not None:
                assert psutil.Process(running[0]).status() == alive_status
        host.kill()
        host.wait(BOUND)
        wait_until(lambda: all(worker_gone(pid) for pid in workers), WORKER_EXIT_BOUND, f"workers {workers} gone")
        # Also any worker the host was starting as it died, which no report could name.
        wait_until(lambda: not workers_started_by(host.pid), WORKER_EXIT_BOUND, "no worker of the host left")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(BOUND)
        for pid in workers:
            if not worker_gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
