"""The real ``boss-sidecar`` CLI in subprocesses: run, health, reload, stop; and the control socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from boss_sidecar.control import ControlServer, LauncherUnreachable, request
from boss_sidecar.testing import peer_config, wait_until
from peers.fault_support import worker_gone
from peers.launcher_support import LauncherProcess

CLI = shutil.which("boss-sidecar", path=str(Path(sys.executable).parent)) or "boss-sidecar"
BOUND = 30.0
"""No wait in these tests is longer than this."""
FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 3.0, "stop_timeout": 5.0}


# ----------------------------------------------------------------- helpers
def toml_value(value: Any) -> str:
    """Enough TOML for the configs these tests write (JSON's scalars are TOML's too)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def write_config(path: Path, sidecars: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for name, table in sidecars.items():
        lines.append(f"[sidecars.{json.dumps(name)}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(*args: str, timeout: float = BOUND) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, check=False)


class Launcher(LauncherProcess):
    """A ``boss-sidecar run`` subprocess and the ``health`` calls that watch it."""

    def __init__(self, socket_path: Path, log: Path, config: Path | None, *options: str) -> None:
        self.socket = socket_path
        self.log = log
        arguments = [] if config is None else [str(config)]
        with log.open("w") as output:
            self.process = subprocess.Popen(
                [CLI, *options, "run", *arguments, "--socket", str(socket_path)],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def health(self) -> tuple[int, dict[str, Any]]:
        done = cli("health", "--json", "--socket", str(self.socket), "--timeout", "5")
        return done.returncode, json.loads(done.stdout) if done.stdout else {}

    def sidecars(self) -> dict[str, dict[str, Any]]:
        return {entry["name"]: entry for entry in self.health()[1].get("sidecars", [])}

    def wait_healthy(self, what: str = "healthy") -> dict[str, dict[str, Any]]:
        wait_until(lambda: self.health()[0] == 0, BOUND, what)
        return self.sidecars()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def logs(self) -> list[dict[str, Any]]:
        """The launcher's log, one JSON object per line (with --log-format json)."""
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Any]:
    started: list[Launcher] = []

    def start(config: Path | None, *options: str) -> Launcher:
        launcher = Launcher(tmp_path / "control.sock", tmp_path / f"launcher{len(started)}.log", config, *options)
        started.append(launcher)
        return launcher

    yield start
    for launcher in started:
        launcher.close()


def two_sidecars(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Sidecar "a" with an inline zenoh table hosting a counter, "b" with a json5 file beside the config."""
    (tmp_path / "b.json5").write_text(json.dumps(peer_config()))
    counter = {"_id": "counter", "classname": "boss_sidecar.demo:Counter"}
    return {
        "a": {"zenoh": peer_config(), **FAST, "objects": [counter]},
        "b": {"zenoh": "b.json5", **FAST},
    }


# ----------------------------------------------------------------- the launcher, end to end
def test_run_health_hung_worker_reload_and_stop(tmp_path: Path, launch: Any) -> None:
    """The whole life of a launcher: healthy, a frozen worker replaced, a reload, a clean stop."""
    sidecars = two_sidecars(tmp_path)
    config = write_config(tmp_path / "sidecars.toml", sidecars)
    launcher = launch(config)
    first = launcher.wait_healthy("both sidecars up")
    assert set(first) == {"a", "b"}
    assert all(entry["state"] == "running" and entry["incarnation"] == 1 for entry in first.values())
    assert sorted(launcher.worker_pids()) == sorted(entry["pid"] for entry in first.values())

    frozen = first["a"]["pid"]
    os.kill(frozen, signal.SIGSTOP)
    try:
        unhealthy = wait_until(lambda: (h := launcher.health())[0] == 1 and h[1], BOUND, "unhealthy")
        entry = {e["name"]: e for e in unhealthy["sidecars"]}["a"]
        assert entry["healthy"] is False
        restarted = wait_until(
            lambda: (s := launcher.sidecars()) and s["a"]["healthy"] and s["a"]["pid"] != frozen and s, BOUND, "restart"
        )
    finally:
        if not worker_gone(frozen):
            os.kill(frozen, signal.SIGKILL)
    assert launcher.health()[0] == 0
    assert restarted["a"]["incarnation"] == 2 and restarted["a"]["restarts"] == 1
    assert "hung" in restarted["a"]["reason"] and "hung" in restarted["a"]["last_exit"]
    assert restarted["b"]["pid"] == first["b"]["pid"]
    assert worker_gone(frozen)

    write_config(config, {**sidecars, "b": {**sidecars["b"], "heartbeat_timeout": 4.0}})
    launcher.signal(signal.SIGHUP)
    reloaded = wait_until(
        lambda: (s := launcher.sidecars()) and s["b"]["healthy"] and s["b"]["pid"] != first["b"]["pid"] and s,
        BOUND,
        "b replaced",
    )
    assert (reloaded["a"]["pid"], reloaded["a"]["incarnation"]) == (restarted["a"]["pid"], 2)
    assert reloaded["b"]["incarnation"] == 1  # a new sidecar, not a restart of the old one
    assert worker_gone(first["b"]["pid"])
    code, answer = wait_until(lambda: (h := launcher.health()) and h[1]["launcher"]["reloads"] and h, BOUND, "reloaded")
    assert code == 0
    assert (answer["launcher"]["reloads"], answer["launcher"]["last_reload"]) == (1, "applied")

    workers = launcher.worker_pids()
    assert len(workers) == 2
    launcher.signal(signal.SIGTERM)
    assert launcher.process.wait(BOUND) == 0
    assert all(worker_gone(pid) for pid in workers)
    assert cli("health", "--socket", str(launcher.socket)).returncode == 2
    assert not launcher.socket.exists()


def test_reload_with_an_invalid_file_keeps_the_running_set(tmp_path: Path, launch: Any) -> None:
    """A bad edit followed by SIGHUP changes nothing that runs; health and the log say why."""
    config = write_config(tmp_path / "sidecars.toml", two_sidecars(tmp_path))
    launcher = launch(config, "--log-format", "json")
    before = launcher.wait_healthy()
    config.write_text(config.read_text() + "\n[sidecars.c]\nrestart = 'sometimes'\n")
    launcher.signal(signal.SIGHUP)
    answer = wait_until(lambda: (h := launcher.health()[1]) and h["launcher"]["reloads"] == 1 and h, BOUND, "reload")
    assert answer["healthy"] is True
    assert answer["launcher"]["last_reload"].startswith("refused")
    assert {e["name"]: e["pid"] for e in answer["sidecars"]} == {name: e["pid"] for name, e in before.items()}
    refused = [r for r in launcher.logs() if r["event"] == "reload refused; the running sidecars are kept"]
    assert refused and "[sidecars.c] restart: must be one of" in refused[0]["problem"]


def test_reload_adds_and_removes_sidecars_and_leaves_the_rest(tmp_path: Path, launch: Any) -> None:
    """Removed sidecars stop, added ones start, unchanged ones keep their worker."""
    sidecars = two_sidecars(tmp_path)
    config = write_config(tmp_path / "sidecars.toml", sidecars)
    launcher = launch(config)
    before = launcher.wait_healthy()
    write_config(config, {"a": sidecars["a"], "c": {"zenoh": peer_config(), **FAST}})
    launcher.signal(signal.SIGHUP)
    after = wait_until(lambda: (s := launcher.sidecars()) and set(s) == {"a", "c"} and s, BOUND, "reloaded")
    launcher.wait_healthy("c up")
    assert after["a"]["pid"] == before["a"]["pid"]
    assert wait_until(lambda: worker_gone(before["b"]["pid"]), BOUND, "b stopped")


def test_default_config_runs_the_demo_sidecar(tmp_path: Path, launch: Any) -> None:
    """`boss-sidecar run` with no file runs the embedded default: one healthy demo sidecar."""
    launcher = launch(None)
    sidecars = launcher.wait_healthy()
    assert list(sidecars) == ["demo"]
    assert launcher.health()[1]["launcher"]["config"] == "<embedded default.toml>"
    launcher.signal(signal.SIGINT)
    assert launcher.process.wait(BOUND) == 0
    assert worker_gone(sidecars["demo"]["pid"])


def test_health_table_for_people(tmp_path: Path, launch: Any) -> None:
    """Without --json health prints a table with one row per sidecar and a verdict."""
    launcher = launch(write_config(tmp_path / "sidecars.toml", two_sidecars(tmp_path)))
    launcher.wait_healthy()
    done = cli("health", "--socket", str(launcher.socket))
    assert done.returncode == 0
    header, *rows = done.stdout.splitlines()
    assert header.split()[:4] == ["SIDECAR", "STATE", "OK", "PID"]
    assert [row.split()[:3] for row in rows[:2]] == [["a", "running", "yes"], ["b", "running", "yes"]]
    assert rows[-1].endswith(": healthy")


def test_json_logs_carry_sidecar_worker_pid_and_incarnation(tmp_path: Path, launch: Any) -> None:
    """With --log-format json every line is one JSON object; worker records name their worker."""
    launcher = launch(write_config(tmp_path / "sidecars.toml", two_sidecars(tmp_path)), "--log-format", "json")
    sidecars = launcher.wait_healthy()
    launcher.signal(signal.SIGTERM)
    assert launcher.process.wait(BOUND) == 0
    records = launcher.logs()
    assert all({"event", "level", "timestamp"} <= set(record) for record in records)
    opened = {r["sidecar"]: r for r in records if r["event"] == "zenoh session open"}
    assert set(opened) == {"a", "b"}
    for name, record in opened.items():
        assert (record["worker_pid"], record["incarnation"]) == (sidecars[name]["pid"], 1)


def test_log_level_filters_the_launcher_output(tmp_path: Path, launch: Any) -> None:
    """--log-level warning leaves out the info records of a normal start and stop."""
    config = write_config(tmp_path / "sidecars.toml", two_sidecars(tmp_path))
    launcher = launch(config, "--log-format", "json", "--log-level", "warning")
    launcher.wait_healthy()
    launcher.signal(signal.SIGTERM)
    assert launcher.process.wait(BOUND) == 0
    assert all(record["level"] not in ("debug", "info") for record in launcher.logs())


def test_worker_log_level_follows_the_policy(tmp_path: Path, launch: Any) -> None:
    """A sidecar with log_level "warning" sends no info records from its worker; the other one does."""
    sidecars = two_sidecars(tmp_path)
    sidecars["b"]["log_level"] = "warning"
    launcher = launch(write_config(tmp_path / "sidecars.toml", sidecars), "--log-format", "json")
    launcher.wait_healthy()
    launcher.signal(signal.SIGTERM)
    assert launcher.process.wait(BOUND) == 0
    worker_info = {"zenoh session open", "stopping"}  # logged at info by the worker itself
    assert {r["sidecar"] for r in launcher.logs() if r["event"] in worker_info} == {"a"}


def test_an_object_that_cannot_be_hosted_is_unhealthy_until_fixed_and_reloaded(tmp_path: Path, launch: Any) -> None:
    """A constructor that raises shows as an error in health (exit 1); fixing the file and SIGHUP heals it."""
    sidecars = two_sidecars(tmp_path)
    counter = {"_id": "counter", "classname": "boss_sidecar.demo:Counter"}
    sidecars["a"]["objects"] = [{**counter, "arguments": {"nonsense": 1}}]
    config = write_config(tmp_path / "sidecars.toml", sidecars)
    launcher = launch(config)
    broken = wait_until(lambda: (s := launcher.sidecars()) and s.get("a", {}).get("error") and s, BOUND, "error")
    assert broken["a"]["error"].startswith("host counter failed:") and "nonsense" in broken["a"]["error"]
    assert launcher.health()[0] == 1
    sidecars["a"]["objects"] = [counter]
    write_config(config, sidecars)
    launcher.signal(signal.SIGHUP)
    healed = launcher.wait_healthy("fixed after reload")
    assert healed["a"]["error"] is None and healed["b"]["pid"] == broken["b"]["pid"]


def test_launcher_never_loads_zenoh(tmp_path: Path, launch: Any) -> None:
    """Only the workers map zenoh's library; the launcher process itself stays zenoh-free."""
    launcher = launch(write_config(tmp_path / "sidecars.toml", two_sidecars(tmp_path)))
    sidecars = launcher.wait_healthy()
    maps = Path(f"/proc/{launcher.process.pid}/maps").read_text()
    assert "zenoh" not in maps
    assert "zenoh" in Path(f"/proc/{sidecars['a']['pid']}/maps").read_text()


def test_invalid_config_exits_1_and_starts_nothing(tmp_path: Path, launch: Any) -> None:
    """run refuses an invalid file: exit 1, every problem logged, no worker, no socket."""
    config = write_config(tmp_path / "bad.toml", {"a": {"restart": "sometimes", "heartbeat_timeout": -1}})
    launcher = launch(config, "--log-format", "json")
    assert launcher.process.wait(BOUND) == 1
    problems = [r["problem"] for r in launcher.logs() if r["event"] == "invalid configuration; nothing started"]
    assert len(problems) == 2
    assert not launcher.socket.exists()


def test_a_second_launcher_on_the_same_socket_refuses(tmp_path: Path, launch: Any) -> None:
    """Two launchers cannot share a control socket; the second exits 1 and the first carries on."""
    config = write_config(tmp_path / "sidecars.toml", two_sidecars(tmp_path))
    first = launch(config)
    first.wait_healthy()
    second = launch(config)
    assert second.process.wait(BOUND) == 1
    assert "another launcher is listening" in second.log.read_text()
    assert first.health()[0] == 0


def test_health_exits_2_without_a_launcher(tmp_path: Path) -> None:
    """No socket, or a stale socket file nobody listens on: exit 2, quickly, with a message."""
    missing = cli("health", "--socket", str(tmp_path / "none.sock"))
    assert missing.returncode == 2 and "no launcher" in missing.stderr
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))
    assert cli("health", "--json", "--socket", str(stale)).returncode == 2


def test_socket_path_env_var_is_shared_by_run_and_health(tmp_path: Path) -> None:
    """BOSS_SIDECAR_SOCKET points both commands at the same socket."""
    path = tmp_path / "env.sock"
    env = {**os.environ, "BOSS_SIDECAR_SOCKET": str(path)}
    done = subprocess.run([CLI, "health"], capture_output=True, text=True, env=env, timeout=BOUND, check=False)
    assert done.returncode == 2 and str(path) in done.stderr


def test_check_config_accepts_the_shipped_examples() -> None:
    """Every example in configs/ and the embedded default pass check-config."""
    root = Path(__file__).parent.parent
    files = [*sorted((root / "configs").glob("*.toml")), root / "src" / "boss_sidecar" / "default.toml"]
    assert len(files) >= 4
    for file in files:
        done = cli("check-config", str(file))
        assert done.returncode == 0, done.stderr
        assert ": ok (" in done.stdout


# ----------------------------------------------------------------- the control socket itself
@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlServer]:
    control = ControlServer(tmp_path / "run" / "control.sock", lambda req: {"ok": True, "echo": req})
    control.start()
    yield control
    control.close()


def test_control_socket_is_private_to_this_user(server: ControlServer) -> None:
    """The socket is mode 0600 in a directory of mode 0700."""
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.path.parent.stat().st_mode) == 0o700
    assert request(server.path, {"command": "x"}) == {"ok": True, "echo": {"command": "x"}}


def test_control_server_refuses_a_peer_of_another_uid(tmp_path: Path) -> None:
    """SO_PEERCRED: a connection from another uid is closed without an answer."""
    control = ControlServer(tmp_path / "control.sock", lambda req: {"ok": True}, allowed_uid=os.getuid() + 1)
    control.start()
    try:
        with pytest.raises(LauncherUnreachable):
            request(control.path, {"command": "health"}, timeout=5)
    finally:
        control.close()


def test_a_silent_client_does_not_hold_up_others(server: ControlServer) -> None:
    """A client that connects and never sends anything does not block the next one."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(server.path))
        assert request(server.path, {"command": "x"}, timeout=5)["ok"] is True


def test_bad_requests_get_an_error_answer(server: ControlServer) -> None:
    """Garbage or a non-object request is answered with ok false, not a crash."""
    for line in (b"not json\n", b"[1, 2]\n"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(str(server.path))
            client.sendall(line)
            answer = json.loads(client.makefile("rb").readline())
        assert answer["ok"] is False and answer["error"].startswith("bad request")


def test_a_stale_socket_file_is_replaced_and_removed_on_close(tmp_path: Path) -> None:
    """A socket file left by a launcher that died is taken over; close() removes it."""
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    control = ControlServer(path, lambda req: {"ok": True})
    control.start()
    assert request(path, {})["ok"] is True
    control.close()
    assert not path.exists()
