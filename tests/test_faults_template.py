"""Faults around the worker template: the host killed (template and workers go, also a template started
in the background), the template killed (its workers live on, the next start forks from a new one)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import psutil

from boss_sidecar import template as template_module
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import peer_config, wait_until
from peers.fault_support import BOUND, worker_gone

MakeSidecar = Callable[..., Sidecar]
OBJECTS = "peers.sidecar_objects"
HOST = Path(__file__).parent / "peers" / "fault_host.py"


def _template_of(sidecar: Sidecar) -> int:
    """The shared template, which forked the sidecar's worker."""
    parent = psutil.Process(sidecar.pid).ppid()
    assert parent == template_module.template_pid()
    return parent


def test_a_killed_template_is_replaced_and_its_workers_live_on(make_sidecar: MakeSidecar) -> None:
    """kill -9 of the template leaves its worker serving; the worker's later crash is noticed and the
    restart forks from a new template."""
    sidecar = make_sidecar("orphaned")
    counter = sidecar.host(f"{OBJECTS}:Counter", 0)
    old_template = _template_of(sidecar)
    os.kill(old_template, signal.SIGKILL)
    wait_until(lambda: worker_gone(old_template), BOUND, "template gone")
    assert counter.increment() == 1
    restarted = threading.Event()
    sidecar.on_restart(lambda _incarnation, _reason: restarted.set())
    os.kill(sidecar.pid or 0, signal.SIGKILL)
    assert restarted.wait(BOUND)
    assert counter.increment() == 1
    assert _template_of(sidecar) != old_template


def _templates_started_by(host_pid: int) -> list[int]:
    found = []
    for process in psutil.process_iter():
        try:
            command = process.cmdline()
            if (
                "boss_sidecar.worker.template" in command
                and dict(itertools.pairwise(command)).get("--parent-pid") == str(host_pid)
                and process.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


def test_template_and_its_worker_end_with_a_killed_host() -> None:
    """SIGKILL of a host program: its template and the worker forked from it are both gone."""
    host = subprocess.Popen(
        [sys.executable, str(HOST), "running", json.dumps(peer_config())],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert host.stdout is not None
        report = json.loads(host.stdout.readline())
        worker = int(report["workers"][-1])
        templates = _templates_started_by(host.pid)
        assert templates == [psutil.Process(worker).ppid()]
        host.kill()
        host.wait(BOUND)
        wait_until(lambda: worker_gone(worker), BOUND, "worker gone")
        wait_until(lambda: all(worker_gone(pid) for pid in templates), BOUND, "template gone")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(BOUND)


STARTS_TEMPLATE_FIRST = """
import sys, threading
from boss_sidecar import template
from boss_sidecar.testing import wait_until
template.start()
pid = wait_until(template.template_pid, what="the template")
wait_until(lambda: all(t.name != "template-start" for t in threading.enumerate()), what="the start thread's end")
print(pid, flush=True)
sys.stdin.read()
"""


def test_a_template_started_in_the_background_ends_with_a_killed_host() -> None:
    """``template.start()`` starts the template from a thread that then ends; SIGKILL of the host
    afterwards still ends the template (parent-death signal, EOF on its channel)."""
    host = subprocess.Popen(
        [sys.executable, "-c", STARTS_TEMPLATE_FIRST],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert host.stdout is not None
        started = int(next(line for line in host.stdout if line.strip().isdigit()))  # after any log record
        assert _templates_started_by(host.pid) == [started]
        host.kill()
        host.wait(BOUND)
        wait_until(lambda: worker_gone(started), BOUND, "template gone")
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(BOUND)
