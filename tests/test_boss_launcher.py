"""``boss-sidecar boss``: a BOSS user's configuration, run by the launcher, checked by HEROS clients elsewhere."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psutil

from peers.boss_support import CLI, METER, RELAY, THERMISTOR, CouchServer, Router, view, write

VIEW = "/lab/_design/heros/_view/all?include_docs=true"


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
