"""What the BOSS tests share: a zenoh router on loopback, a CouchDB-like HTTP server with basic auth,
a ``boss-sidecar boss`` process and the HEROS client program that checks it from outside."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import client_config, free_port, router_config, wait_until
from peers.launcher_support import LauncherProcess
from peers.sidecar_support import BOUND, child_environment, ok_line, run_program

CLI = shutil.which("boss-sidecar", path=str(Path(sys.executable).parent)) or "boss-sidecar"
USER, PASSWORD = "lab", "s3cret"
FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 3.0, "stop_timeout": 5.0}

METER = {"_id": "meter", "classname": "peers.boss_objects.Multimeter", "arguments": {"offset": 1.0}}
RELAY = {
    "_id": "relay",
    "classname": "peers.boss_objects.Relay",
    "arguments": {"meter": "$meter", "loop": "@_boss_loop"},
}
THERMISTOR = {
    "_id": "thermistor",
    "classname": "peers.boss_objects.Thermistor",
    "arguments": {},
    "datasource": {"interval": 0.2, "observables": {"temperature": {"unit": "C"}}},
}


def hero_environment(**extra: str) -> dict[str, str]:
    """A child's environment in which the HERO classes of ``peers.boss_objects`` import, as a user's would."""
    tests = str(Path(__file__).parent.parent)
    existing = os.environ.get("PYTHONPATH")
    return child_environment(PYTHONPATH=os.pathsep.join([tests, *([existing] if existing else [])]), **extra)


class Router:
    """A zenoh router on a free loopback port, run in a sidecar (a Python session in router mode)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sidecar = Sidecar("router", router_config(self.port)).start()

    def environment(self, **extra: str) -> dict[str, str]:
        """A child's environment: HEROS (and BOSS HERO workers) connect to this router as clients."""
        return hero_environment(HEROS_ZENOH_CONFIG=json.dumps(client_config(self.port)), **extra)

    def client(self, *steps: list[Any]) -> list[Any]:
        """Run the HEROS client program in another process; the result of each step."""
        done = run_program("boss_client.py", str(self.port), json.dumps(list(steps)), env=self.environment())
        result: list[Any] = ok_line(done)
        return result

    def stop(self) -> None:
        self.sidecar.stop(timeout=5)


class CouchServer:
    """A real HTTP server on loopback answering like CouchDB: JSON at paths, basic auth required."""

    def __init__(self) -> None:
        self.routes: dict[str, Any] = {}
        self.requests: list[str] = []
        routes, requests = self.routes, self.requests
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append(self.path)
                if self.headers.get("Authorization") != expected:
                    self._answer(401, {"error": "unauthorized"})
                elif self.path in routes:
                    self._answer(200, routes[self.path])
                else:
                    self._answer(404, {"error": "not_found"})

            def _answer(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:  # nothing on the test's output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, password: str = PASSWORD) -> str:
        return f"http://{USER}:{password}@127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def view(*documents: dict[str, Any]) -> dict[str, Any]:
    """A CouchDB view answer with ``include_docs=true``."""
    rows = [{"id": doc["_id"], "key": doc["_id"], "value": {"rev": "1-a"}, "doc": doc} for doc in documents]
    return {"total_rows": len(rows), "offset": 0, "rows": rows}


class BossProcess(LauncherProcess):
    """``boss-sidecar boss ARGS`` (or ``run CONFIG``) as a user starts it, watched through ``health``."""

    def __init__(
        self, router: Router, tmp: Path, *args: str, run: Path | None = None, env: dict[str, str] | None = None
    ):
        self.socket = tmp / f"boss-{os.getpid()}-{free_port()}.sock"
        self.log = tmp / "boss.log"
        command = ["run", str(run)] if run is not None else ["boss", *args]
        with self.log.open("w") as output:
            self.process = subprocess.Popen(
                [CLI, "--log-format", "json", *command, "--socket", str(self.socket)],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env or router.environment(),
            )

    def health(self) -> tuple[int, dict[str, Any]]:
        done = subprocess.run(
            [CLI, "health", "--json", "--socket", str(self.socket), "--timeout", "5"],
            capture_output=True,
            text=True,
            timeout=BOUND,
            check=False,
        )
        return done.returncode, json.loads(done.stdout) if done.stdout else {}

    def heroes(self) -> dict[str, dict[str, Any]]:
        return {entry["name"]: entry for entry in self.health()[1].get("sidecars", [])}

    def wait_healthy(self, names: set[str]) -> dict[str, dict[str, Any]]:
        def ready() -> dict[str, dict[str, Any]] | None:
            code, answer = self.health()
            found = {entry["name"]: entry for entry in answer.get("sidecars", [])}
            return found if code == 0 and set(found) == names else None

        result: dict[str, dict[str, Any]] = wait_until(ready, BOUND * 2, f"healthy HEROs {sorted(names)}")
        return result


def records(log: Path) -> Iterator[dict[str, Any]]:
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            yield json.loads(line)


def write(path: Path, *documents: dict[str, Any]) -> str:
    """A BOSS source file: the documents as rows; its path."""
    path.write_text(json.dumps({"rows": [{"doc": doc} for doc in documents]}))
    return str(path)


def meter(name: str, offset: float) -> dict[str, Any]:
    """A Multimeter HERO document named ``name`` whose read() answers 1.5 + offset."""
    return {**METER, "_id": name, "arguments": {"offset": offset}}
