"""``boss-sidecar boss``: a BOSS user's configuration, run by the launcher, checked by HEROS clients elsewhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from boss_sidecar import cli
from boss_sidecar.testing import wait_until
from peers.boss_support import (
    CLI,
    METER,
    PASSWORD,
    RELAY,
    THERMISTOR,
    BossProcess,
    CouchServer,
    Router,
    hero_environment,
    view,
)
from peers.fault_support import worker_gone
from peers.sidecar_support import BOUND

VIEW = "/lab/_design/heros/_view/all?include_docs=true"


@pytest.fixture
def router() -> Iterator[Router]:
    started = Router()
    yield started
    started.stop()


@pytest.fixture
def couch() -> Iterator[CouchServer]:
    server = CouchServer()
    yield server
    server.close()


@pytest.fixture
def boss(router: Router, tmp_path: Path) -> Iterator[Any]:
    started: list[BossProcess] = []

    def start(*args: str, run: Path | None = None) -> BossProcess:
        process = BossProcess(router, tmp_path, *args, run=run)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def write(path: Path, *documents: dict[str, Any]) -> str:
    path.write_text(json.dumps({"rows": [{"doc": doc} for doc in documents]}))
    return str(path)


def meter(name: str, offset: float) -> dict[str, Any]:
    return {**METER, "_id": name, "arguments": {"offset": offset}}


def test_a_users_couchdb_config_runs_with_name_loop_datasource_and_management(
    router: Router, couch: CouchServer, boss: Any
) -> None:
    """A view and a document behind basic auth: every HERO answers a client in another process, `$name`
    reaches the other HERO, `@_boss_loop` runs in the worker, the datasource publishes, and the exposed
    management HERO answers status() in BOSS's shape with the supervisor's facts; health lists them all.
    The launcher itself never loaded zenoh's native library."""
    couch.routes[VIEW] = view(METER, RELAY)
    couch.routes["/lab/thermistor"] = THERMISTOR
    launcher = boss("-u", couch.url(VIEW), "-u", couch.url("/lab/thermistor"), "--expose", "--name", "lab")
    health = launcher.wait_healthy({"meter", "relay", "thermistor", "lab"})
    read, relayed, on_loop, observed, status = router.client(
        ["call", "meter", "read", []],
        ["call", "relay", "relayed", []],
        ["call", "relay", "on_loop", []],
        ["observe", "thermistor"],
        ["call", "lab", "status", []],
    )
    assert (read, relayed, on_loop, observed) == (2.5, 2.5, True, ["thermistor", [21.25]])
    assert sorted(status) == ["meter", "relay", "thermistor"]
    entry = status["meter"]
    assert entry["status"] == "running" and entry["object"] is None
    assert entry["config"]["classname"] == METER["classname"] and "BOSS: lab" in entry["config"]["tags"]
    assert (entry["pid"], entry["incarnation"], entry["restarts"]) == (health["meter"]["pid"], 1, 0)
    table = subprocess.run(
        [CLI, "health", "--socket", str(launcher.socket)], capture_output=True, text=True, check=False
    )
    assert table.returncode == 0
    assert {line.split()[0] for line in table.stdout.splitlines()[1:5]} == {"meter", "relay", "thermistor", "lab"}
    assert not [m.path for m in psutil.Process(launcher.process.pid).memory_maps() if "zenoh" in m.path]
    assert [m.path for m in psutil.Process(health["meter"]["pid"]).memory_maps() if "zenoh" in m.path]


def test_a_hero_whose_worker_is_killed_comes_back_and_answers(router: Router, tmp_path: Path, boss: Any) -> None:
    """kill -9 of a HERO's worker: the supervisor starts a new one, heros-boss's factory builds the HERO
    again, and a client's next call reaches it (BOSS never notices such a death)."""
    launcher = boss("-u", write(tmp_path / "heroes.json", METER), "--log", "WARNING")
    first = launcher.wait_healthy({"meter"})["meter"]["pid"]
    os.kill(first, signal.SIGKILL)
    wait_until(
        lambda: launcher.health()[0] == 0 and launcher.heroes()["meter"]["incarnation"] == 2, BOUND, "a new worker"
    )
    (pid,) = router.client(["call", "meter", "worker_pid", []])
    assert pid == launcher.heroes()["meter"]["pid"] != first


def _reloaded(launcher: BossProcess, count: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        answer = launcher.health()[1]
        return answer if answer.get("launcher", {}).get("reloads") == count else None

    result: dict[str, Any] = wait_until(done, BOUND * 2, f"reload {count}")
    return result


def test_sighup_restarts_changed_starts_added_stops_removed_and_keeps_the_rest(
    router: Router, couch: CouchServer, tmp_path: Path, boss: Any
) -> None:
    """BOSS's refresh on SIGHUP: a changed document restarts its HERO, an added one starts, a removed one
    stops (gone from the network); the unchanged keep their workers. Then an invalid document and a source
    that answers 404: each is a problem naming source and _id, and their HEROs keep running."""
    file = write(tmp_path / "heroes.json", meter("kept", 0), meter("changed", 0), meter("removed", 0))
    couch.routes[VIEW] = view(meter("couchy", 0))
    launcher = boss("-u", file, "-u", couch.url(VIEW))
    before = launcher.wait_healthy({"kept", "changed", "removed", "couchy"})

    write(tmp_path / "heroes.json", meter("kept", 0), meter("changed", 10), meter("added", 20))
    launcher.process.send_signal(signal.SIGHUP)
    _reloaded(launcher, 1)
    after = launcher.wait_healthy({"kept", "changed", "added", "couchy"})
    assert after["kept"]["pid"] == before["kept"]["pid"] and after["couchy"]["pid"] == before["couchy"]["pid"]
    assert after["changed"]["pid"] != before["changed"]["pid"]
    changed, added, removed = router.client(
        ["call", "changed", "read", []], ["call", "added", "read", []], ["absent", "removed"]
    )
    assert (changed, added, removed) == (11.5, 21.5, True)

    write(tmp_path / "heroes.json", {"_id": "kept", "arguments": {}}, meter("changed", 10), meter("added", 20))
    del couch.routes[VIEW]
    launcher.process.send_signal(signal.SIGHUP)
    answer = _reloaded(launcher, 2)
    assert not answer["healthy"]
    problems = answer["boss"]["problems"]
    assert any(f"url {file}: rows[0].doc (_id 'kept'): 'classname'" in problem for problem in problems)
    assert any("lab:***@127.0.0.1" in p and p.endswith("HTTP 404 Not Found") for p in problems)
    assert all(PASSWORD not in problem for problem in problems)
    still = launcher.heroes()
    assert (still["kept"]["pid"], still["couchy"]["pid"]) == (before["kept"]["pid"], before["couchy"]["pid"])
    assert router.client(["call", "kept", "read", []], ["call", "couchy", "read", []]) == [1.5, 1.5]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_launcher_leaves_nothing_on_the_machine_or_the_network(
    router: Router, tmp_path: Path, boss: Any, signum: int
) -> None:
    """After SIGTERM (a clean exit) or SIGKILL of the launcher, no HERO worker runs and no HERO answers
    (BOSS leaves a worker after SIGTERM, and every one after SIGKILL, still on the network)."""
    launcher = boss("-u", write(tmp_path / "heroes.json", METER, THERMISTOR), "--expose", "--name", "lab")
    launcher.wait_healthy({"meter", "thermistor", "lab"})
    workers = launcher.worker_pids()
    assert len(workers) == 3
    launcher.process.send_signal(signum)
    assert launcher.process.wait(BOUND) == (0 if signum == signal.SIGTERM else -signal.SIGKILL)
    wait_until(lambda: all(worker_gone(pid) for pid in workers), BOUND, "every HERO worker gone")
    assert router.client(["absent", "meter"], ["absent", "thermistor"], ["absent", "lab"]) == [True, True, True]


def test_no_autostart_and_the_management_hero_start_and_stop_heroes(router: Router, tmp_path: Path, boss: Any) -> None:
    """--no-autostart adds HEROs stopped; BOSS's remote API on the management HERO starts and stops them."""
    launcher = boss("-u", write(tmp_path / "heroes.json", METER), "--no-autostart", "--expose", "--name", "lab")
    assert launcher.wait_healthy({"meter", "lab"})["meter"]["state"] == "stopped"
    status, _, read = router.client(
        ["call", "lab", "status", []], ["call", "lab", "start_hero", ["meter"]], ["call", "meter", "read", []]
    )
    assert status["meter"]["status"] == "stopped" and read == 2.5
    _, status, absent = router.client(
        ["call", "lab", "stop_hero", ["meter"]], ["call", "lab", "status", []], ["absent", "meter"]
    )
    assert status["meter"]["status"] == "stopped" and absent is True


def test_one_launcher_runs_sidecars_and_boss_heroes_from_one_toml_file(
    router: Router, tmp_path: Path, boss: Any
) -> None:
    """A [boss] table beside [sidecars.NAME] tables: one launcher, one control socket, both kinds healthy."""
    config = tmp_path / "launcher.toml"
    write(tmp_path / "heroes.json", METER)  # named relative to the config file, not the launcher's cwd
    config.write_text('[sidecars.plain]\nheartbeat_interval = 0.2\n\n[boss]\nurls = ["heroes.json"]\nname = "lab"\n')
    launcher = boss(run=config)
    found = launcher.wait_healthy({"plain", "meter"})
    assert found["meter"]["hero"] == "running" and "hero" not in found["plain"]
    assert router.client(["call", "meter", "read", []]) == [2.5]


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    command = [CLI, "check-config", str(config)]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=BOUND * 3, check=False, env=hero_environment()
    )


def test_check_config_reads_boss_sources_and_names_what_is_wrong(couch: CouchServer, tmp_path: Path) -> None:
    """check-config reads every BOSS source and imports each class in a child: a good file passes; a bad
    document, an unimportable class and a refused URL are each named with source and _id."""
    good = write(tmp_path / "good.json", METER, RELAY)
    config = tmp_path / "good.toml"
    config.write_text(f'[boss]\nurls = ["{good}"]\n')
    done = check_config(config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].endswith("ok ([boss] 2 HEROs: meter, relay)")

    bad = write(tmp_path / "bad.json", {**METER, "classname": "peers.boss_objects.Voltmeter"}, {"_id": "x"})
    couch.routes["/lab/meter"] = METER
    config.write_text(f'[boss]\nurls = ["{bad}", "{couch.url("/lab/meter", password="wrong")}"]\n')
    done = check_config(config)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert any(line.startswith(f"url {bad}: rows[1].doc (_id 'x'): 'classname'") for line in lines)
    assert any(line.startswith(f"url {bad}: _id 'meter': classname: ") and "Voltmeter" in line for line in lines)
    assert any(line.endswith("/lab/meter: HTTP 401 Unauthorized") for line in lines)


def test_boss_without_heros_boss_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the optional extra, `boss-sidecar boss` exits 1 with one line naming the install command."""
    monkeypatch.setattr(cli, "heros_boss_installed", lambda: False)
    assert cli._boss(cli._parser().parse_args(["boss", "-u", "heroes.json"])) == 1  # main() would set up logging
    assert (
        capsys.readouterr().err
        == 'boss-sidecar boss: BOSS configurations need heros-boss: pip install "boss-sidecar[boss]"\n'
    )
