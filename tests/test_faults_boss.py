"""Faults of BOSS HEROs under the launcher: killed workers, SIGHUP with bad sources, the launcher's end,
bad configurations, a missing extra; checked by HEROS clients in another process."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from boss_sidecar import cli, config
from boss_sidecar.boss import BOSS
from boss_sidecar.errors import ConfigError
from boss_sidecar.testing import client_config, wait_until
from peers.boss_support import (
    CLI,
    FAST,
    METER,
    PASSWORD,
    RELAY,
    THERMISTOR,
    BossProcess,
    CouchServer,
    Router,
    hero_environment,
    meter,
    view,
    write,
)
from peers.fault_support import worker_gone
from peers.sidecar_support import BOUND

VIEW = "/lab/_design/heros/_view/all?include_docs=true"


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
    monkeypatch.setattr(config, "heros_boss_installed", lambda: False)  # the command looks it up when run
    assert cli._boss(cli._parser().parse_args(["boss", "-u", "heroes.json"])) == 1  # main() would set up logging
    assert (
        capsys.readouterr().err
        == 'boss-sidecar boss: BOSS configurations need heros-boss: pip install "boss-sidecar[boss]"\n'
    )


@pytest.fixture
def python_boss(router: Router) -> Iterator[BOSS]:
    """boss_sidecar.boss.BOSS in this process, its HERO workers clients of the router."""
    made = BOSS("py", [], zenoh=client_config(router.port), **FAST)
    yield made
    made.close()


def test_a_hero_that_cannot_be_built_is_failed_with_the_reason(python_boss: BOSS) -> None:
    """A class that does not import: status "failed", and the error says why; an invalid document is refused."""
    python_boss.add_hero({**METER, "_id": "ghost", "classname": "peers.boss_objects.Voltmeter"})
    entry = wait_until(
        lambda: python_boss.status()["ghost"]["error"] and python_boss.status()["ghost"], BOUND * 2, "failed"
    )
    assert entry["status"] == "failed" and "Voltmeter" in str(entry["error"])
    with pytest.raises(ConfigError, match="'classname'"):
        python_boss.add_hero({"_id": "nameless"})


def test_a_worker_that_dies_while_building_its_hero_builds_it_again(
    router: Router, python_boss: BOSS, tmp_path: Path
) -> None:
    """A worker dying during the factory's build is a crash like any other: the next worker builds the HERO."""
    python_boss.add_hero(
        {"_id": "phoenix", "classname": "peers.boss_objects.CrashesOnce", "arguments": {"marker": str(tmp_path / "m")}}
    )
    wait_until(lambda: python_boss.health()[0]["healthy"], BOUND * 2, "phoenix built")
    entry = python_boss.status()["phoenix"]
    assert (entry["status"], entry["incarnation"], entry["error"]) == ("running", 2, None)
    assert router.client(["call", "phoenix", "read", []]) == ["risen"]
