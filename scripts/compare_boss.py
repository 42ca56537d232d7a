"""heros-boss's ``boss`` and ``boss-sidecar boss`` side by side, on one BOSS configuration.

The configuration is the issue's: two plain classes (one taking the other as a ``$name``
argument, and ``@_boss_loop``) and a polled datasource, read from one JSON file with
``-u file://...`` (heros-boss takes URLs only). Both commands run in turn against one zenoh
router on loopback (a Python session in router mode); a HEROS client in a child process (this
process never imports zenoh) calls the HEROs. Measured:

- first call: from starting the command to the first answered call of each HERO (``relay``
  answers only once ``$meter`` is resolved);
- kill -9 recovery: from SIGKILL of the ``meter`` HERO's worker (its pid read from the HERO) to
  the next answered call, or "never" within ``--bound`` seconds;
- SIGTERM exit: from SIGTERM to the command's exit (killed after ``--bound`` seconds);
- SIGKILL leaves: after SIGKILL of the command, the worker processes still alive and the HEROs
  still answering on the network, looked at ``--settle`` seconds later.

Usage: python scripts/compare_boss.py [--bound S] [--settle S]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
BIN = Path(sys.executable).parent
HEROES = ("meter", "relay", "thermistor")
CONFIG = {
    "rows": [
        {"doc": {"_id": "meter", "classname": "peers.boss_objects.Multimeter", "arguments": {"offset": 1.0}}},
        {
            "doc": {
                "_id": "relay",
                "classname": "peers.boss_objects.Relay",
                "arguments": {"meter": "$meter", "loop": "@_boss_loop"},
            }
        },
        {
            "doc": {
                "_id": "thermistor",
                "classname": "peers.boss_objects.Thermistor",
                "arguments": {},
                "datasource": {"interval": 1.0, "observables": {"temperature": {"unit": "C"}}},
            }
        },
    ]
}
METHODS = {"meter": "worker_pid", "relay": "relayed", "thermistor": "read"}


# ----------------------------------------------------------------- the HEROS client (a child process)
def prober(port: int) -> None:
    """Answer one JSON request per line: call a HERO until it answers (bounded), or say it is absent."""
    from boss_sidecar.testing import client_config

    os.environ["HEROS_ZENOH_CONFIG"] = json.dumps(client_config(port))
    from heros import RemoteHERO

    def call(name: str) -> Any:
        remote = RemoteHERO(name)
        method = METHODS[name]
        value = getattr(remote, method)()
        remote._destroy_hero()
        return value

    for line in sys.stdin:
        request = json.loads(line)
        deadline = time.monotonic() + request["bound"]
        answer: dict[str, Any] = {"ok": False}
        while time.monotonic() < deadline:
            try:
                answer = {"ok": True, "value": call(request["name"])}
                break
            except Exception as exc:  # absent, or gone mid-call: try again
                answer = {"ok": False, "error": repr(exc)}
                if request.get("once"):
                    break
                time.sleep(0.02)
        print(json.dumps(answer), flush=True)
    os._exit(0)


class Prober:
    def __init__(self, port: int, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--prober", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def ask(self, name: str, bound: float, once: bool = False) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"name": name, "bound": bound, "once": once}) + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        return answer

    def close(self) -> None:
        self.process.kill()
        self.process.wait(5)


# ----------------------------------------------------------------- one command, measured
def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def measure(command: list[str], env: dict[str, str], port: int, bound: float, settle: float) -> dict[str, Any]:
    prober = Prober(port, env)
    result: dict[str, Any] = {}
    try:
        prober.ask("meter", 0.1, once=True)  # the prober's session is up before the clock starts
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name in HEROES:
            answer = prober.ask(name, bound)
            result[f"first call {name}"] = time.monotonic() - started if answer["ok"] else None
            if not answer["ok"]:
                print(f"{command[0]}: {name} never answered: {answer.get('error')}", file=sys.stderr)
        pid = prober.ask("meter", bound)["value"]
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        answer = prober.ask("meter", bound)
        result["kill -9 recovery"] = time.monotonic() - killed if answer["ok"] else None
        workers = descendants(process.pid)
        terminated = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(bound)
            result["SIGTERM exit"] = time.monotonic() - terminated
        except subprocess.TimeoutExpired:
            result["SIGTERM exit"] = None
        result["SIGTERM leaves workers"] = len(alive(workers))
        cleanup(process, workers)

        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name in HEROES:
            prober.ask(name, bound)
        workers = descendants(process.pid)
        process.kill()
        process.wait(5)
        time.sleep(settle)  # what SIGKILL leaves, some seconds on
        result["SIGKILL leaves workers"] = len(alive(workers))
        result["SIGKILL leaves HEROs answering"] = sum(prober.ask(name, 2.0, once=True)["ok"] for name in HEROES)
        cleanup(process, workers)
    finally:
        prober.close()
    return result


def cleanup(process: subprocess.Popen[bytes], workers: list[psutil.Process]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(5)
    for worker in alive(workers):
        worker.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bound", type=float, default=20.0, help="seconds any one wait may take")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after SIGKILL before looking")
    parser.add_argument("--prober", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prober is not None:
        prober(args.prober)
        return

    from boss_sidecar.logs import configure_logging
    from boss_sidecar.sidecar import Sidecar
    from boss_sidecar.testing import client_config, free_port, router_config

    configure_logging("warning")

    port = free_port()
    router = Sidecar("router", router_config(port)).start()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "heroes.json"
        config.write_text(json.dumps(CONFIG))
        env = dict(os.environ)
        env["HEROS_ZENOH_CONFIG"] = json.dumps(client_config(port))
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
        socket = Path(tmp) / "control.sock"
        sides = {
            "boss (heros-boss)": [str(BIN / "boss"), "-u", config.as_uri(), "--log", "WARNING"],
            "boss-sidecar boss": [
                str(BIN / "boss-sidecar"),
                "boss",
                "-u",
                str(config),
                "--log",
                "WARNING",
                "--socket",
                str(socket),
            ],
        }
        try:
            results = {side: measure(command, env, port, args.bound, args.settle) for side, command in sides.items()}
        finally:
            router.stop()
    print_table(results, args.bound)


def print_table(results: dict[str, dict[str, Any]], bound: float) -> None:
    rows = list(next(iter(results.values())))
    width = max(map(len, rows))
    print(f"{'':{width}}  " + "  ".join(f"{side:>18}" for side in results))
    for row in rows:
        cells = []
        for side in results:
            value = results[side][row]
            if value is None:
                cells.append(f"{'never (>' + format(bound, 'g') + ' s)':>18}")
            elif isinstance(value, float):
                cells.append(f"{value:>16.2f} s")
            else:
                cells.append(f"{value:>18}")
        print(f"{row:{width}}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
