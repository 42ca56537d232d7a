"""boss_sidecar.boss.BOSS: heros-boss's BOSS API in a Python service, each HERO a supervised sidecar."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from boss_sidecar.boss import BOSS, parse_url
from boss_sidecar.testing import client_config, wait_until
from peers.boss_support import FAST, METER, THERMISTOR, Router, hero_environment
from peers.sidecar_support import BOUND


@pytest.fixture
def router(monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    started = Router()
    monkeypatch.setenv("PYTHONPATH", hero_environment()["PYTHONPATH"])
    yield started
    started.stop()


@pytest.fixture
def boss(router: Router) -> Iterator[BOSS]:
    made = BOSS("py", [], zenoh=client_config(router.port), **FAST)
    yield made
    made.close()


def running(boss: BOSS, name: str, incarnation: int = 1) -> dict[str, object]:
    def ready() -> dict[str, object] | None:
        entry = boss.status()[name]
        return entry if entry["state"] == "running" and entry["incarnation"] == incarnation else None

    result: dict[str, object] = wait_until(ready, BOUND * 2, f"{name} running (incarnation {incarnation})")
    return result


def test_status_has_boss_shape_and_a_killed_worker_is_replaced(router: Router, boss: BOSS) -> None:
    """status() answers BOSS's {name: {config, object, status}} plus pid and incarnation; after kill -9 of
    the worker the HERO is built again and answers a client in another process."""
    boss.add_hero(METER)
    first = running(boss, "meter")
    assert first["status"] == "running" and first["object"] is None
    assert first["config"] == {**METER, "tags": ["BOSS: py"]}
    assert router.client(["call", "meter", "worker_pid", []]) == [first["pid"]]
    os.kill(int(str(first["pid"])), signal.SIGKILL)
    second = running(boss, "meter", incarnation=2)
    assert router.client(["call", "meter", "worker_pid", []]) == [second["pid"]] != [first["pid"]]


def test_stop_remove_and_refresh_from_a_source(router: Router, boss: BOSS, tmp_path: Path) -> None:
    """stop_hero leaves the HERO known and "stopped" (gone from the network); refresh_hero_sources adds what
    a source names; remove_hero forgets it."""
    source = tmp_path / "heroes.json"
    source.write_text(json.dumps({"rows": [{"doc": METER}, {"doc": THERMISTOR}]}))
    boss.add_hero_source(parse_url, str(source))
    boss.refresh_hero_sources()
    running(boss, "meter")
    running(boss, "thermistor")
    boss.stop_hero("meter")
    assert boss.status()["meter"]["status"] == "stopped"
    assert router.client(["absent", "meter"], ["observe", "thermistor"]) == [True, ["thermistor", [21.25]]]
    boss.remove_hero("thermistor")
    assert sorted(boss.status()) == ["meter"]
    with pytest.raises(NameError, match="not run by this BOSS"):
        boss.start_hero("thermistor")


def test_heroes_of_any_realm_use_the_workers_own_zenoh_session(router: Router) -> None:
    """A HERO in realm "lab" announces the zid of its worker's session: HEROS opened no second session."""
    lab = BOSS("py-lab", [], realm="lab", zenoh=client_config(router.port), **FAST)
    try:
        lab.add_hero(METER)
        running(lab, "meter")
        zid = lab._heroes["meter"].sidecar.info()["zid"]  # type: ignore[union-attr]
        (tags,) = router.client(["tags", "meter", "lab"])
        assert f"_zid:{zid}" in tags and "BOSS: py-lab" in tags
    finally:
        lab.close()
