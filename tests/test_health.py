"""Health of real workers: psutil facts, heartbeats that catch a hung worker, and resource limits."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from boss_sidecar import CallTimeout, SidecarUnavailable
from boss_sidecar._process import WorkerProcess
from boss_sidecar.health import Health
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.states import SidecarState
from boss_sidecar.template import TemplateBackend
from boss_sidecar.testing import peer_config, wait_until
from peers.fault_support import worker_gone

MakeSidecar = Callable[..., Sidecar]


class Spinner:
    """Hosted in the worker: burns CPU on a thread until the worker dies."""

    def __init__(self) -> None:
        threading.Thread(target=self._spin, daemon=True).start()

    @staticmethod
    def _spin() -> None:
        while True:
            sum(range(1000))


class Sleeper:
    """Hosted in the worker: a method that never returns."""

    def block(self) -> None:
        threading.Event().wait()

    def ping(self) -> str:
        return "pong"


def _restarted(sidecar: Sidecar, after: int) -> Health | None:
    """The health once a worker newer than incarnation ``after`` is running and healthy."""
    health = sidecar.health()
    return health if health.healthy and health.incarnation > after else None


def test_health_of_a_running_sidecar_reports_process_and_heartbeat_facts(make_sidecar: MakeSidecar) -> None:
    """A running worker: state, pid, incarnation, uptime, psutil readings and a heartbeat round trip."""
    sidecar = make_sidecar(heartbeat_interval=0.1)
    health = wait_until(lambda: (h := sidecar.health()).heartbeat_rtt is not None and h, 10, "first heartbeat")
    assert health.name == "test"
    assert health.state == "running"
    assert health.healthy
    assert health.pid == sidecar.pid
    assert psutil.Process(health.pid).cmdline()[1:3] == ["-m", "boss_sidecar.worker"]
    assert health.incarnation == 1
    assert health.restarts == 0
    assert health.last_exit is None
    assert health.uptime is not None and health.uptime > 0
    assert health.rss_bytes is not None and health.rss_bytes > 0
    assert health.cpu_percent is not None and health.cpu_percent >= 0
    assert health.threads is not None and health.threads >= 1
    assert health.open_fds is not None and health.open_fds >= 3
    assert health.heartbeat_rtt >= 0
    assert health.heartbeat_age is not None and health.heartbeat_age >= 0


def test_health_to_dict_is_json_serialisable_and_complete(make_sidecar: MakeSidecar) -> None:
    """to_dict() names every field and survives json.dumps, running or stopped."""
    sidecar = make_sidecar()
    running = sidecar.health().to_dict()
    assert set(running) == set(Health.__dataclass_fields__)
    assert json.loads(json.dumps(running)) == running
    sidecar.stop()
    stopped = sidecar.health().to_dict()
    assert json.loads(json.dumps(stopped)) == stopped
    assert stopped["state"] == "stopped"
    assert stopped["healthy"] is False
    assert stopped["pid"] is None


def test_health_of_a_never_started_sidecar_is_unhealthy_without_a_process() -> None:
    """Before start() there is no pid and nothing to measure."""
    health = Sidecar("idle", peer_config()).health()
    assert (health.state, health.healthy, health.pid, health.incarnation) == ("stopped", False, None, 0)
    assert health.rss_bytes is None and health.heartbeat_rtt is None


def test_sigstopped_worker_is_reported_unhealthy_then_killed_and_restarted(
    make_sidecar: MakeSidecar, caplog: pytest.LogCaptureFixture
) -> None:
    """A frozen worker misses heartbeats: health says so at once, and after the timeout it is replaced."""
    sidecar = make_sidecar(heartbeat_interval=0.1, heartbeat_timeout=3.0)
    wait_until(lambda: sidecar.health().heartbeat_rtt is not None, 10, "first heartbeat")
    frozen = sidecar.pid
    assert frozen is not None
    with caplog.at_level(logging.INFO, logger="boss_sidecar"):
        os.kill(frozen, signal.SIGSTOP)
        try:
            overdue = wait_until(lambda: not (h := sidecar.health()).healthy and h, 10, "unhealthy")
            assert "heartbeat overdue" in overdue.reason
            health = wait_until(lambda: _restarted(sidecar, 1), 20, "restart")
        finally:
            if not worker_gone(frozen):
                os.kill(frozen, signal.SIGKILL)
    assert health.pid != frozen and health.restarts == 1
    assert "restarted after: hung: no heartbeat answer" in health.reason
    assert health.last_exit is not None
    assert "SIGKILL" in health.last_exit and "hung" in health.last_exit
    assert worker_gone(frozen)
    killed = [record for record in caplog.records if getattr(record, "event", None) == "killing worker"]
    assert killed and killed[0].reason.startswith("hung: no heartbeat answer")
    assert killed[0].worker_pid == frozen


def test_method_that_never_returns_gets_the_worker_restarted(make_sidecar: MakeSidecar) -> None:
    """A call stuck long past its timeout is reported by the worker's pong; the worker is replaced.

    The timeout is short enough to keep the test quick and long enough for host() on a loaded machine."""
    sidecar = make_sidecar(heartbeat_interval=0.1, call_timeout=3.0)
    sleeper = sidecar.host(f"{__name__}:Sleeper")
    with pytest.raises(CallTimeout):
        sleeper.block()
    health = wait_until(lambda: _restarted(sidecar, 1), 20, "restart")
    assert "hung: call 'block' of Sleeper (hosted #" in health.reason and "past its 3s timeout" in health.reason
    assert sleeper.ping() == "pong"  # hosted again on the new worker


def test_memory_limit_restarts_the_worker_with_the_reason(make_sidecar: MakeSidecar) -> None:
    """A worker above max_rss_mb is killed and restarted; health names the limit."""
    sidecar = make_sidecar(heartbeat_interval=0.1, max_rss_mb=1, max_restarts=100)
    first = sidecar.pid
    health = wait_until(lambda: (h := sidecar.health()).restarts >= 1 and h.last_exit and h, 20, "restart")
    assert health.last_exit is not None and "memory limit: RSS" in health.last_exit
    assert first is not None and wait_until(lambda: worker_gone(first), 5, "old worker gone")


def test_sustained_cpu_limit_restarts_the_worker(make_sidecar: MakeSidecar) -> None:
    """A worker above max_cpu_percent for cpu_window is killed and restarted."""
    sidecar = make_sidecar(heartbeat_interval=0.1, max_cpu_percent=20, cpu_window=0.5, max_restarts=100)
    sidecar.host(f"{__name__}:Spinner")
    health = wait_until(lambda: (h := sidecar.health()).restarts >= 1 and h.last_exit and h, 30, "restart")
    assert health.last_exit is not None and "CPU limit: above 20%" in health.last_exit


def test_frequent_health_requests_do_not_hide_sustained_cpu_use(make_sidecar: MakeSidecar) -> None:
    """health() and the limit check share one CPU probe; polling health must not reset the measurement."""
    sidecar = make_sidecar(heartbeat_interval=0.1)
    sidecar.host(f"{__name__}:Spinner")
    readings: list[Any] = []

    def busy() -> bool:
        readings.append(sidecar.health().cpu_percent)
        return sum(1 for value in readings if value is not None and value > 20) >= 3

    wait_until(busy, 20, "CPU use seen while polling health")


class _SpawnNoting(TemplateBackend):
    """The default backend, noting each worker it spawns, so a test can act the moment one is."""

    def __init__(self) -> None:
        self.spawned: queue.Queue[int] = queue.Queue()

    def spawn(self, command: list[str], channel_fd: int, env: dict[str, str]) -> WorkerProcess:
        process = super().spawn(command, channel_fd, env)
        self.spawned.put(process.pid)
        return process


def _stop_while(
    sidecar: Sidecar, action: Callable[[], object], after: int, spawns: _SpawnNoting
) -> BaseException | None:
    """Run ``action`` on a thread, stop the sidecar once worker number ``after`` is spawned; its outcome."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run)
    thread.start()
    for _ in range(after):
        pid = spawns.spawned.get(timeout=10)
    sidecar.stop(timeout=5)
    thread.join(10)
    assert len(outcome) == 1
    assert sidecar.state == SidecarState.STOPPED
    assert wait_until(lambda: worker_gone(pid), 5, "worker gone")
    return outcome[0]


def test_stop_during_start_ends_stopped() -> None:
    """stop() while start() waits for the worker: start raises SidecarUnavailable, the state is STOPPED."""
    spawns = _SpawnNoting()
    sidecar = Sidecar("racing", peer_config(), backend=spawns)
    outcome = _stop_while(sidecar, sidecar.start, after=1, spawns=spawns)
    assert outcome is None or isinstance(outcome, SidecarUnavailable)


def test_stop_during_restart_ends_stopped(make_sidecar: MakeSidecar) -> None:
    """stop() while restart() waits for the new worker: no InvalidTransition, the state is STOPPED."""
    spawns = _SpawnNoting()
    sidecar = make_sidecar(backend=spawns)
    outcome = _stop_while(sidecar, sidecar.restart, after=2, spawns=spawns)
    assert outcome is None or isinstance(outcome, SidecarUnavailable)
