"""Workers forked from the shared template: it never opens a session, its workers use zenoh safely,
a changed preloaded module is picked up on restart, the option turns it off, a config's classes are
preloaded. (Its faults: test_faults_template.py.)"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from boss_sidecar import ConfigError
from boss_sidecar import template as template_module
from boss_sidecar.config import parse_config
from boss_sidecar.launcher import config_classnames
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import peer_config, wait_until
from peers.fault_support import BOUND

MakeSidecar = Callable[..., Sidecar]
OBJECTS = "peers.sidecar_objects"
HOST = Path(__file__).parent / "peers" / "fault_host.py"
ROUNDS = 12


def _runtime_threads(pid: int) -> list[str]:
    """Names of threads that a runtime named (zenoh's are ``net-0``, ``app-0``, ``rx-1``...).

    Threads a process starts without naming them (the main one, a BLAS pool) carry its own name.
    """
    tasks = Path(f"/proc/{pid}/task")
    names = [(task / "comm").read_text().strip() for task in tasks.iterdir()]
    main = Path(f"/proc/{pid}/comm").read_text().strip()
    return sorted(name for name in names if name != main)


def _template_of(sidecar: Sidecar) -> int:
    """The template that forked the sidecar's worker (its parent), checked to be the shared one."""
    parent = psutil.Process(sidecar.pid).ppid()
    assert parent == template_module.template_pid()
    assert "boss_sidecar.worker.template" in psutil.Process(parent).cmdline()
    return parent


def test_template_never_opens_a_zenoh_session(make_sidecar: MakeSidecar) -> None:
    """The template has no zenoh runtime thread and no socket beyond loopback-free host channels, while
    the worker it forked, which opened a session, has both: the check sees what it looks for."""
    sidecar = make_sidecar("forked")
    template = _template_of(sidecar)
    assert _runtime_threads(template) == []
    assert psutil.Process(template).net_connections(kind="inet") == []
    assert _runtime_threads(sidecar.pid or 0) != []
    assert psutil.Process(sidecar.pid).net_connections(kind="inet") != []


def _speak_once(listener: Sidecar, port: int, number: int) -> int:
    """A new forked worker subscribes and puts until both subscriptions heard it, then stops; its template."""
    speaker = Sidecar(f"speaker-{number}", peer_config(connect_ports=(port,))).start()
    try:
        template = _template_of(speaker)
        heard, own = threading.Event(), threading.Event()
        key = f"template/round/{number}"
        subscription = listener.subscribe(key, lambda _sample: heard.set())
        speaker.subscribe(key, lambda _sample: own.set())

        def both_heard() -> bool:
            speaker.put(key, b"hello")  # again until the route between the peers exists
            return heard.wait(0.1) and own.is_set()

        wait_until(both_heard, BOUND, "a sample on both subscriptions")
        subscription.close()
    finally:
        speaker.stop(timeout=10)
    assert speaker.health().last_exit == "exited with code 0"
    return template


def test_forked_workers_open_use_and_close_sessions_many_times(port: int) -> None:
    """Worker after worker forked from one template opens a session, delivers samples to subscription
    callbacks, and stops politely (exit code 0, no escalation): none hangs in zenoh."""
    listener = Sidecar("listener", peer_config(port)).start()
    try:
        templates = {_speak_once(listener, port, number) for number in range(ROUNDS)}
        assert templates == {template_module.template_pid()}
    finally:
        listener.stop(timeout=10)


def test_restarts_of_a_forked_worker_keep_its_subscription(make_sidecar: MakeSidecar) -> None:
    """Restart after restart, the new forked worker replays the subscription and its callback runs."""
    sidecar = make_sidecar("restarting")
    for round_number in range(ROUNDS):
        heard = threading.Event()
        subscription = sidecar.subscribe(f"template/restart/{round_number}", lambda _sample, seen=heard: seen.set())
        sidecar.restart()
        _template_of(sidecar)
        sidecar.put(f"template/restart/{round_number}", b"x")
        assert heard.wait(BOUND)
        subscription.close()
        assert sidecar.health().last_exit == "exited with code 0"


def test_a_changed_preloaded_module_is_picked_up_on_restart(
    make_sidecar: MakeSidecar, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The template preloaded a module; the user edits it; ``restart()`` gives a worker with the new code
    (the template saw the file change, retired and was replaced)."""
    module = tmp_path / "edited_driver.py"
    module.write_text("class Driver:\n    def version(self):\n        return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert template_module.preload("edited_driver:Driver") == {}
    sidecar = make_sidecar("edited")
    before = _template_of(sidecar)
    driver = sidecar.host("edited_driver:Driver")
    assert driver.version() == 1
    module.write_text("class Driver:\n    def version(self):\n        return 2  # edited\n")
    sidecar.restart()
    assert driver.version() == 2
    assert _template_of(sidecar) != before


def test_worker_template_off_starts_a_fresh_interpreter(make_sidecar: MakeSidecar) -> None:
    """``worker_template=False``: the worker is the host's own child, a fresh interpreter as before."""
    sidecar = make_sidecar("fresh", worker_template=False)
    assert psutil.Process(sidecar.pid).ppid() == os.getpid()
    assert sidecar.host(f"{OBJECTS}:Counter", 0).increment() == 1


def test_worker_template_must_be_a_bool() -> None:
    """A config that says ``worker_template = "no"`` is refused with the option's name."""
    with pytest.raises(ConfigError, match="worker_template must be true or false"):
        Sidecar("bad", worker_template="no")


def test_a_launcher_preloads_the_classes_its_config_hosts_from_the_template(tmp_path: Path) -> None:
    """The classes of sidecars that fork from the template are preloaded; one with the template off is not."""
    text = """
[sidecars.forked]
[[sidecars.forked.objects]]
_id = "counter"
classname = "peers.sidecar_objects:Counter"

[sidecars.fresh]
worker_template = false
[[sidecars.fresh.objects]]
_id = "other"
classname = "peers.fault_objects:FaultEcho"
"""
    config = parse_config(text, "launcher.toml", tmp_path, check_imports=False)
    assert config_classnames(config) == ["peers.sidecar_objects:Counter"]
