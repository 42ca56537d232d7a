"""The sidecar as processes: the host stays free of zenoh, survives fork, and the supervisor keeps
the worker alive (restart policy, intensity, hooks) and never leaves one behind."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from boss_sidecar.errors import ConfigError, SidecarCrashed, SidecarUnavailable
from boss_sidecar.samples import Sample
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.states import SidecarState, StateChange
from boss_sidecar.supervisor import ProcessBackend
from boss_sidecar.testing import peer_config
from peers.sidecar_support import BOUND, Collector, line_program, ok_line, process_gone, run_program, wait_gone

S = SidecarState
OBJECTS = "peers.sidecar_objects"


def _identity(sidecar: Sidecar) -> tuple[int, float]:
    """The worker's pid and create time, to tell it from a later process with the same pid."""
    pid = sidecar.pid
    assert pid is not None
    return pid, psutil.Process(pid).create_time()


def _kill_worker(sidecar: Sidecar) -> int:
    pid = sidecar.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid


class States:
    """Every state change of a sidecar, with bounded waits for a state or a restart."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.changes: list[StateChange] = []
        self.restarts: list[tuple[int, str]] = []
        self._changed = threading.Condition()
        sidecar.on_state_change(self._on_change)
        sidecar.on_restart(self._on_restart)

    def _on_change(self, change: StateChange) -> None:
        with self._changed:
            self.changes.append(change)
            self._changed.notify_all()

    def _on_restart(self, incarnation: int, reason: str) -> None:
        with self._changed:
            self.restarts.append((incarnation, reason))
            self._changed.notify_all()

    def wait_state(self, state: SidecarState, after: int = 0) -> StateChange:
        """The first change into ``state`` among the changes from index ``after`` on."""
        with self._changed:
            found = lambda: [c for c in self.changes[after:] if c.new == state]  # noqa: E731
            assert self._changed.wait_for(found, BOUND), f"no {state} within {BOUND:g}s: {self.changes}"
            return found()[0]

    def wait_restarts(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.restarts) >= count, BOUND), self.changes

    @property
    def path(self) -> list[tuple[str, str]]:
        return [(str(change.old), str(change.new)) for change in self.changes]


class Doubler:
    """A host object exposed to hosted objects."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def double(self, value: int) -> int:
        self.calls.append(value)
        return value * 2


@pytest.fixture
def sidecar(make_sidecar: Callable[..., Sidecar]) -> Sidecar:
    return make_sidecar("proc")


# ----------------------------------------------------------------- the host process


def test_host_that_used_every_feature_never_imported_zenoh() -> None:
    """A host using put, get, subscribe, queryable, liveliness and hosting ends without zenoh loaded."""
    seen = ok_line(run_program("sidecar_every_feature_host.py"))
    assert seen["samples"] == [["put", "one"], ["delete", ""]]
    assert seen["get"] == ["plain", "A"] and seen["alive"] == ["ef/alive/me"]
    assert seen["hosted"] == [11, 11, "counter"] and seen["callback"] == 41 and seen["after_restart"] == 2


def test_forked_child_uses_its_own_sidecar_while_the_parents_keeps_working() -> None:
    """After fork, the child's own sidecar works, the parent's refuses the child and keeps serving."""
    seen = ok_line(run_program("sidecar_fork_host.py"))
    assert seen == {"child_exit": 0, "answers": ["parent"], "same_worker": True, "standbys_kept": True}


def test_plain_script_without_main_guard_starts_a_sidecar() -> None:
    """A script with no ``if __name__ == "__main__"`` starts a sidecar and uses it."""
    assert ok_line(run_program("sidecar_plain_script.py")) == ["answered"]


def test_worker_is_gone_soon_after_its_host_is_killed() -> None:
    """SIGKILL of the host makes its worker exit by itself (parent-death signal, channel EOF)."""
    with line_program("sidecar_idle_host.py", "wait") as host:
        pid, created = host.expect("ready")
        killed = time.monotonic()
        host.process.send_signal(signal.SIGKILL)
        wait_gone(pid, created)
        seconds = time.monotonic() - killed
    print(f"worker {pid} gone {seconds * 1000:.1f} ms after its host was killed")


def test_host_that_never_calls_stop_exits_promptly_and_leaves_no_worker() -> None:
    """A host whose worker has callback declarations exits by itself; the atexit hook stops the worker."""
    with line_program("sidecar_idle_host.py", "leave") as host:
        pid, created = host.expect("ready")
        assert host.finish() == 0
        assert process_gone(pid, created)
    assert "exited with code 0" in host.stderr


# ----------------------------------------------------------------- stopping


def test_stop_of_a_worker_with_callback_declarations_is_polite_and_exits_0(
    sidecar: Sidecar, caplog: pytest.LogCaptureFixture
) -> None:
    """zenoh-python #434: a worker with callback subscriber and queryable still stops when asked, exit 0."""
    sidecar.subscribe("polite/k", lambda sample: None)
    sidecar.queryable("polite/q", lambda query: "here")
    sidecar.liveliness_subscribe("polite/alive/**", lambda sample: None)
    assert [reply.text() for reply in sidecar.get("polite/q")] == ["here"]
    pid, created = _identity(sidecar)
    with caplog.at_level(logging.INFO, logger="boss_sidecar"):
        sidecar.stop()
    assert sidecar.health().last_exit == "exited with code 0"
    assert process_gone(pid, created)
    events = [getattr(record, "event", record.getMessage()) for record in caplog.records]
    assert "worker stopped" in events
    assert [event for event in events if "SIGTERM" in event or "SIGKILL" in event] == []


def test_stop_returns_with_a_sigstopped_worker_and_kills_it(make_sidecar: Callable[..., Sidecar]) -> None:
    """stop() escalates past a worker that cannot answer (SIGSTOP) and returns with it dead."""
    sidecar = make_sidecar("wedged", heartbeat_timeout=60)
    pid, created = _identity(sidecar)
    os.kill(pid, signal.SIGSTOP)
    sidecar.stop(timeout=2)
    assert sidecar.state == S.STOPPED and sidecar.pid is None
    assert process_gone(pid, created)
    assert sidecar.health().last_exit == "killed by SIGKILL"


def test_context_manager_starts_and_stops_the_worker() -> None:
    """``with Sidecar(...)`` runs a worker inside the block and none after it, even on an exception."""
    with pytest.raises(KeyError), Sidecar("ctx", peer_config()) as sidecar:
        assert sidecar.state == S.RUNNING and sidecar.info()["zid"]
        pid, created = _identity(sidecar)
        raise KeyError("leave the block")
    assert sidecar.state == S.STOPPED and sidecar.pid is None
    assert process_gone(pid, created)


def test_several_named_sidecars_run_side_by_side(make_sidecar: Callable[..., Sidecar]) -> None:
    """Sidecars with different names have their own workers and state; stopping one leaves the others."""
    sidecars = {name: make_sidecar(name) for name in ("alpha", "beta", "gamma")}
    counters = {name: sidecar.host(f"{OBJECTS}:Counter", 0, name=name) for name, sidecar in sidecars.items()}
    counters["alpha"].increment(5)
    assert [counter.increment() for counter in counters.values()] == [6, 1, 1]
    assert len({sidecar.pid for sidecar in sidecars.values()}) == 3
    for name, sidecar in sidecars.items():
        assert name in psutil.Process(sidecar.pid).cmdline()
    sidecars["beta"].stop()
    with pytest.raises(SidecarUnavailable):
        counters["beta"].increment()
    assert counters["alpha"].increment() == 7 and counters["gamma"].increment() == 2


def test_busy_wait_option_reaches_the_worker(make_sidecar: Callable[..., Sidecar]) -> None:
    """``busy_wait=0`` turns polling off on both sides: the worker is started with it, and serves as usual."""
    quiet = make_sidecar("quiet", busy_wait=0)
    assert quiet.host(f"{OBJECTS}:Counter", 0).increment() == 1
    command = psutil.Process(quiet.pid).cmdline()
    assert command[command.index("--busy-wait") + 1] == "0"


# ----------------------------------------------------------------- hosted objects


@pytest.mark.parametrize("classname", [f"{OBJECTS}:Counter", f"{OBJECTS}.Counter"])
def test_host_a_class_by_colon_or_dotted_name(sidecar: Sidecar, classname: str) -> None:
    """ "pkg.mod:Class" and "pkg.mod.Class" both instantiate the class in the worker."""
    counter = sidecar.host(classname, 41)
    assert counter.increment() == 42
    assert counter.worker_pid() == sidecar.pid != os.getpid()


def test_host_a_boss_document_passes_its_id_as_name(sidecar: Sidecar) -> None:
    """BOSS's {"_id", "classname", "arguments"} builds the object with the arguments and _id as name."""
    counter = sidecar.host({"_id": "my-counter", "classname": f"{OBJECTS}.Counter", "arguments": {"start": 7}})
    assert (counter.name, counter.value) == ("my-counter", 7)


def test_hosted_attributes_are_read_and_written_in_the_worker(sidecar: Sidecar) -> None:
    """Attribute reads and writes on the proxy act on the object in the worker."""
    counter = sidecar.host(f"{OBJECTS}:Counter")
    counter.value = 100
    counter.label = "renamed"
    assert (counter.increment(), counter.value, counter.label) == (101, 101, "renamed")
    with pytest.raises(AttributeError):
        counter.missing  # noqa: B018


def test_hosted_object_calls_back_into_an_exposed_host_object(sidecar: Sidecar) -> None:
    """A hosted object given ``sidecar.expose(obj)`` calls obj's methods in the host."""
    doubler = Doubler()
    caller = sidecar.host(f"{OBJECTS}:Caller", sidecar.expose(doubler))
    assert caller.ask(20) == 41
    assert doubler.calls == [20]


def test_hosting_an_unknown_class_raises_config_error_naming_it(sidecar: Sidecar) -> None:
    """A class that cannot be imported is a ConfigError naming what was missing."""
    with pytest.raises(ConfigError, match="NoSuchClass"):
        sidecar.host(f"{OBJECTS}:NoSuchClass")


def test_worker_imports_from_sys_path_entries_the_host_added_at_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_sidecar: Callable[..., Sidecar]
) -> None:
    """A module only importable through a sys.path entry the host added can be hosted."""
    (tmp_path / "runtime_only_module.py").write_text(
        textwrap.dedent(
            """
            class Greeter:
                def greet(self, name):
                    return f"hello {name} from " + __file__
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    greeter = make_sidecar("syspath").host("runtime_only_module:Greeter")
    assert greeter.greet("host") == f"hello host from {tmp_path / 'runtime_only_module.py'}"


# ----------------------------------------------------------------- crashes and restarts


def test_worker_killed_mid_call_fails_the_call_fast_and_everything_comes_back(sidecar: Sidecar) -> None:
    """kill -9 during a blocked hosted call: SidecarCrashed at once; after the restart calls work,
    hosted objects are rebuilt and the subscription delivers again without any user action."""
    states = States(sidecar)
    received = Collector()
    sidecar.subscribe("k9/k", received)
    counter = sidecar.host(f"{OBJECTS}:Counter", 10)
    blocker = sidecar.host(f"{OBJECTS}:Blocker")
    entered = threading.Event()

    class Host:
        def entered(self) -> None:
            entered.set()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(blocker.block, sidecar.expose(Host()))
        assert entered.wait(BOUND)
        old = _kill_worker(sidecar)
        with pytest.raises(SidecarCrashed):
            pending.result(BOUND)  # the call's own timeout is 30 s: failing here is failing fast
    states.wait_restarts(1)
    assert sidecar.pid != old and sidecar.incarnation == 2
    assert sidecar.info()["zid"]
    assert counter.increment() == 11
    sidecar.put("k9/k", "after the restart")
    assert [sample.text() for sample in received.wait(1)] == ["after the restart"]


def test_restart_never_leaves_a_crashed_sidecar_failed(make_sidecar: Callable[..., Sidecar]) -> None:
    """restart="never": a killed worker is not replaced; calls raise SidecarUnavailable."""
    sidecar = make_sidecar("never", restart="never")
    states = States(sidecar)
    _kill_worker(sidecar)
    assert "SIGKILL" in states.wait_state(S.FAILED).reason
    with pytest.raises(SidecarUnavailable, match="SIGKILL"):
        sidecar.info()


def test_restart_on_failure_replaces_a_crash_but_not_a_clean_exit(make_sidecar: Callable[..., Sidecar]) -> None:
    """restart="on-failure": a killed worker is replaced; one that exits 0 by itself is not."""
    sidecar = make_sidecar("on-failure", restart="on-failure")
    states = States(sidecar)
    _kill_worker(sidecar)
    states.wait_restarts(1)
    with pytest.raises(SidecarCrashed):
        sidecar.host(f"{OBJECTS}:Blocker").exit(0)
    assert "exited with code 0" in states.wait_state(S.STOPPED).reason
    assert states.restarts == [(2, states.restarts[0][1])]
    with pytest.raises(SidecarUnavailable):
        sidecar.info()


def test_restart_always_replaces_even_a_clean_exit(make_sidecar: Callable[..., Sidecar]) -> None:
    """restart="always": a worker that exits 0 by itself is replaced too."""
    sidecar = make_sidecar("always", restart="always")
    states = States(sidecar)
    with pytest.raises(SidecarCrashed):
        sidecar.host(f"{OBJECTS}:Blocker").exit(0)
    states.wait_restarts(1)
    assert "exited with code 0" in states.restarts[0][1]
    assert sidecar.info()["zid"]


def test_too_many_restarts_fail_the_sidecar_with_the_reason(make_sidecar: Callable[..., Sidecar]) -> None:
    """More crashes than max_restarts within the window: FAILED, and calls raise why."""
    sidecar = make_sidecar("intensity", max_restarts=2, restart_window=60, backoff_initial=0)
    states = States(sidecar)
    for restarts in (1, 2):
        _kill_worker(sidecar)
        states.wait_restarts(restarts)
    _kill_worker(sidecar)
    failed = states.wait_state(S.FAILED)
    assert "gave up: 2 restarts within 60s" in failed.reason and "SIGKILL" in failed.reason
    with pytest.raises(SidecarUnavailable, match="gave up: 2 restarts"):
        sidecar.info()


def test_state_hooks_see_every_transition(make_sidecar: Callable[..., Sidecar]) -> None:
    """Start, crash and automatic restart, requested restart, stop: each change reaches the hook in order."""
    sidecar = Sidecar("hooks", peer_config())
    states = States(sidecar)
    try:
        sidecar.start()
        _kill_worker(sidecar)
        states.wait_restarts(1)
        sidecar.restart()
    finally:
        sidecar.stop()
    assert states.path == [
        ("stopped", "starting"),
        ("starting", "running"),
        ("running", "backoff"),
        ("backoff", "starting"),
        ("starting", "running"),
        ("running", "starting"),
        ("starting", "running"),
        ("running", "stopping"),
        ("stopping", "stopped"),
    ]
    assert all(change.reason for change in states.changes)
    assert [incarnation for incarnation, _ in states.restarts] == [2, 3]


class GatedSpawn(ProcessBackend):
    """Spawns workers, but holds a spawn while ``gate`` is clear (``held`` says one is waiting)."""

    def __init__(self) -> None:
        self.gate, self.held = threading.Event(), threading.Event()
        self.gate.set()

    def spawn(self, command: list[str], channel_fd: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
        if not self.gate.is_set():
            self.held.set()
            assert self.gate.wait(BOUND)
        return super().spawn(command, channel_fd, env)


@pytest.fixture
def gated() -> Iterator[tuple[Sidecar, GatedSpawn]]:
    backend = GatedSpawn()
    sidecar = Sidecar("gated", peer_config(), backend=backend).start()
    try:
        yield sidecar, backend
    finally:
        backend.gate.set()
        sidecar.stop()


def test_calls_made_during_a_restart_wait_for_it(gated: tuple[Sidecar, GatedSpawn]) -> None:
    """A call made while the worker is being replaced waits and is served by the new worker."""
    sidecar, backend = gated
    received = Collector()
    sidecar.subscribe("gate/k", received)
    backend.gate.clear()
    _kill_worker(sidecar)
    assert backend.held.wait(BOUND)
    assert sidecar.state == S.STARTING
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        info = pool.submit(sidecar.info)
        get = pool.submit(sidecar.get, "gate/none", timeout=1)
        assert not info.done() and not get.done()
        backend.gate.set()
        assert info.result(BOUND)["zid"] and get.result(BOUND) == []
    assert sidecar.incarnation == 2
    sidecar.put("gate/k", "served")
    assert isinstance(received.wait(1)[0], Sample)
