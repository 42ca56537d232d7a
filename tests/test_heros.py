"""HEROS through the sidecar: a LocalHERO hosted in the worker, shared session, reached from elsewhere."""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import free_port, peer_config, wait_until
from peers.sidecar_support import BOUND, child_environment, ok_line, run_program

THERMOMETER = "peers.heros_objects:Thermometer"


def _remote_client(name: str, port: int) -> dict[str, Any]:
    """Run the RemoteHERO program against the sidecar listening on ``port``; what it saw."""
    env = child_environment(HEROS_ZENOH_CONFIG=json.dumps(peer_config(connect_ports=(port,))))
    seen: dict[str, Any] = ok_line(run_program("heros_remote_client.py", name, env=env))
    return seen


def test_remote_hero_in_another_process_uses_a_hero_hosted_in_a_sidecar(
    make_sidecar: Callable[..., Sidecar], port: int
) -> None:
    """A RemoteHERO in another process calls methods and sets attributes of a LocalHERO in the worker,
    which announces itself on the sidecar's own zenoh session."""
    name = f"thermometer-{uuid.uuid4().hex[:8]}"
    sidecar = make_sidecar("heros", peer_config(port))
    hero = sidecar.host(THERMOMETER, name)
    assert hero.read() == 21.5
    seen = _remote_client(name, port)
    assert (seen["read"], seen["add"], seen["unit"], seen["read_after_set"]) == (21.5, 5, "C", 31.5)
    assert f"_zid:{sidecar.info()['zid']}" in seen["tags"]
    assert hero.setpoint == 30.0


def test_hosted_hero_is_reachable_again_after_the_worker_is_killed(
    make_sidecar: Callable[..., Sidecar], port: int
) -> None:
    """After kill -9 the new worker builds the HERO again on its new session; remote clients find it."""
    name = f"thermometer-{uuid.uuid4().hex[:8]}"
    sidecar = make_sidecar("heros-restart", peer_config(port))
    sidecar.host({"_id": name, "classname": THERMOMETER, "arguments": {}})
    restarted = threading.Event()
    sidecar.on_restart(lambda incarnation, reason: restarted.set())
    os.kill(sidecar.pid or 0, signal.SIGKILL)
    assert restarted.wait(BOUND)
    seen = _remote_client(name, port)
    assert seen["read"] == 21.5 and f"_zid:{sidecar.info()['zid']}" in seen["tags"]


def test_sidecar_without_a_config_opens_its_session_from_heros_zenoh_config(
    make_sidecar: Callable[..., Sidecar], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no zenoh configuration given, the worker uses HEROS_ZENOH_CONFIG like HEROS does."""
    port = free_port()
    monkeypatch.setenv("HEROS_ZENOH_CONFIG", json.dumps(peer_config(port)))
    env_configured = Sidecar("from-env")
    try:
        env_configured.start()
        other = make_sidecar("connects", peer_config(connect_ports=(port,)))
        zid = env_configured.info()["zid"]
        wait_until(lambda: other.info()["peers"] == [zid], BOUND, "the sidecars to connect")
    finally:
        env_configured.stop()
