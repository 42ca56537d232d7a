"""The foreground launcher behind ``boss-sidecar run``: a set of sidecars kept to a config file.

The main thread only waits for signals (SIGTERM/SIGINT stop, SIGHUP reloads) and applies them;
sidecars start on their own threads, so a stop never waits for a slow start, and the control
socket answers health requests from its own threads meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import platform
import queue
import signal
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from boss_sidecar import template
from boss_sidecar.boss import BOSS, read_source
from boss_sidecar.boss_sources import sources_from
from boss_sidecar.config import BossSpec, LauncherConfig, SidecarSpec, load_config
from boss_sidecar.control import ControlServer
from boss_sidecar.errors import ConfigError, SidecarError
from boss_sidecar.logs import get_logger
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.states import FINAL_STATES

_log = get_logger("boss_sidecar.launcher")
STOP, RELOAD = "stop", "reload"
JOIN_GRACE = 2.0
"""Seconds beyond a sidecar's stop_timeout that the launcher waits for its stop to return."""


@dataclass(eq=False)
class Running:
    """One sidecar the launcher runs, the spec it runs with, and what went wrong starting it."""

    spec: SidecarSpec
    sidecar: Sidecar
    starter: threading.Thread | None = None
    error: str | None = None
    retiring: bool = False
    """Set when the launcher stops it: a start or hosting cut short by that is not an error."""

    def health(self) -> dict[str, Any]:
        entry = self.sidecar.health().to_dict()
        entry["error"] = self.error
        if self.error is not None:
            entry["healthy"] = False
        return entry

    @property
    def given_up(self) -> bool:
        """Failed, or its start or hosting failed: a reload starts it afresh even if unchanged."""
        starting = self.starter is not None and self.starter.is_alive()
        return not starting and (self.error is not None or self.sidecar.state in FINAL_STATES)


def config_classnames(config: LauncherConfig) -> list[str]:
    """The classes a config hosts in sidecars that fork from the template: the template preloads them."""
    return [
        document["classname"]
        for spec in config.sidecars.values()
        if spec.policy.worker_template
        for document in spec.objects
    ]


def log_problems(problems: ConfigError, event: str) -> None:
    """One log record per problem, so each reads well on a terminal and parses as JSON."""
    for problem in getattr(problems, "problems", [problems]):
        _log.error(event, problem=str(problem))


class Launcher:
    """Runs the sidecars of ``config_path`` (the embedded default when None) until stopped."""

    def __init__(
        self,
        config_path: Path | None,
        socket_path: Path,
        *,
        check_imports: bool = True,
        config: LauncherConfig | None = None,
    ) -> None:
        """``config``, when given, is used instead of a file (``boss-sidecar boss`` builds one from its flags)."""
        self.config_path = config_path.resolve() if config_path is not None else None
        self._given = config
        self.socket_path = socket_path
        self._check_imports = check_imports
        self._commands: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._running: dict[str, Running] = {}
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._reloads = 0
        self._last_reload: str | None = None
        self._stopping = False
        self._config_file = "?"
        self._boss: BOSS | None = None
        self._boss_spec: BossSpec | None = None
        self._boss_name = unique_instance_name()

    # ----------------------------------------------------------------- main loop
    def run(self) -> int:
        """Start everything, then serve signals until told to stop; 0 after a clean stop, 1 if nothing started."""
        previous = self._install_signals()  # from the start: a SIGTERM during set-up is not lost
        try:
            return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(self) -> int:
        template.start()  # it imports zenoh and HEROS while the config is checked in a child of its own
        try:
            config = self._load()
        except ConfigError as exc:
            log_problems(exc, "invalid configuration; nothing started")
            return 1
        boss_forks = config.boss is not None and config.boss.policy.worker_template
        if not boss_forks and not any(spec.policy.worker_template for spec in config.sidecars.values()):
            template.stop()  # no sidecar of this config forks from it
        server = ControlServer(self.socket_path, self.handle)
        try:
            server.start()
        except SidecarError as exc:
            _log.error("cannot open the control socket; nothing started", error=str(exc))
            return 1
        try:
            _log.info("launcher running", pid=os.getpid(), config=config.file, sidecars=sorted(config.sidecars))
            if config.boss is not None:
                _log.info("BOSS HERO sources", name=config.boss.name or self._boss_name, urls=len(config.boss.urls))
            self._apply(config)
            while (command := self._commands.get()) != STOP:
                if command == RELOAD:
                    self._reload()
        finally:
            self._stop_all()
            server.close()
        _log.info("launcher stopped")
        return 0

    def _install_signals(self) -> dict[int, Any]:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            # SimpleQueue.put is reentrant: safe in a handler that interrupts a get().
            self._commands.put(RELOAD if signum == signal.SIGHUP else STOP)

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            previous[signum] = signal.signal(signum, on_signal)
        return previous

    def _load(self) -> LauncherConfig:
        config = self._given or load_config(self.config_path, check_imports=self._check_imports)
        self._config_file = config.file
        return config

    # ----------------------------------------------------------------- applying a config
    def _apply(self, config: LauncherConfig) -> None:
        """Stop what is gone, changed or given up; start what is new (or was stopped for that)."""
        with self._lock:
            current = dict(self._running)
        retire = [
            name for name, running in current.items() if config.sidecars.get(name) != running.spec or running.given_up
        ]
        self._stop(current[name] for name in retire)
        template.preload(*config_classnames(config))
        kept = set(current) - set(retire)
        for name, spec in config.sidecars.items():
            if name not in kept:
                self._start(spec)
        with self._lock:
            for name in set(retire) - set(config.sidecars):
                self._running.pop(name, None)
        added = sorted(set(config.sidecars) - set(current))
        restarted = sorted(set(retire) & set(config.sidecars))
        removed = sorted(set(retire) - set(config.sidecars))
        _log.info("configuration applied", added=added, restarted=restarted, removed=removed, kept=sorted(kept))
        self._apply_boss(config.boss)

    def _apply_boss(self, spec: BossSpec | None) -> None:
        """BOSS's refresh: re-read the HERO sources; a changed ``[boss]`` table (realm, name, ...) starts anew."""
        if spec != self._boss_spec and self._boss is not None:
            self._boss.close()
            with self._lock:
                self._boss = None
        self._boss_spec = spec
        if spec is None:
            return
        boss = self._boss
        if boss is None:
            boss = BOSS(spec.name or self._boss_name, realm=spec.realm, zenoh=spec.zenoh, **spec.policy_options())
            for source in sources_from(spec.urls, spec.env):
                boss.add_hero_source(read_source, source)
            if spec.expose:
                boss.expose()
            with self._lock:
                self._boss = boss
        boss.refresh_hero_sources(auto_start=spec.autostart)
        _log.info("BOSS HEROs refreshed", heroes=sorted(boss.status()), problems=len(boss.problems))

    def _reload(self) -> None:
        _log.info("reloading configuration", file=self._config_file)
        try:
            config = self._load()
        except ConfigError as exc:
            log_problems(exc, "reload refused; the running sidecars are kept")
            outcome = f"refused: {exc}"
        else:
            self._apply(config)
            outcome = "applied"
        with self._lock:  # health shows a reload once it is finished, count and outcome together
            self._reloads += 1
            self._last_reload = outcome

    def _start(self, spec: SidecarSpec) -> None:
        sidecar = Sidecar(spec.name, spec.zenoh, **spec.policy_options())
        running = Running(spec, sidecar)
        running.starter = threading.Thread(target=self._bring_up, args=(running,), name=f"start-{spec.name}")
        with self._lock:
            self._running[spec.name] = running
        running.starter.start()

    @staticmethod
    def _bring_up(running: Running) -> None:
        """Start one sidecar and host its objects; failures are kept for health, not raised."""
        sidecar, log = running.sidecar, _log.bind(sidecar=running.spec.name)
        step = "start"
        try:
            sidecar.start()
            for document in running.spec.objects:
                step = f"host {document.get('_id') or document['classname']}"
                sidecar.host(dict(document))
        except Exception as exc:
            if running.retiring:
                return
            running.error = f"{step} failed: {exc}"
            log.error("sidecar did not come up", step=step, error=str(exc))
            return
        log.info("sidecar up", pid=sidecar.pid, incarnation=sidecar.incarnation, objects=len(running.spec.objects))

    def _stop(self, stopping: Iterable[Running]) -> None:
        """Stop sidecars in parallel, each within its stop_timeout (plus a grace for the threads)."""
        threads = []
        deadline = time.monotonic()
        for running in stopping:
            timeout = running.spec.policy.stop_timeout
            deadline = max(deadline, time.monotonic() + timeout + JOIN_GRACE)
            thread = threading.Thread(target=self._stop_one, args=(running,), name=f"stop-{running.spec.name}")
            thread.start()
            threads.append((thread, running))
        for thread, running in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if running.starter is not None:
                running.starter.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                _log.error("sidecar did not stop in time", sidecar=running.spec.name)

    @staticmethod
    def _stop_one(running: Running) -> None:
        running.retiring = True
        with contextlib.suppress(SidecarError):
            running.sidecar.stop()
        _log.info("sidecar stopped", sidecar=running.spec.name, last_exit=running.sidecar.health().last_exit)

    def _stop_all(self) -> None:
        _log.info("stopping all sidecars")
        self._stopping = True
        with self._lock:
            everything = list(self._running.values())
            boss = self._boss
        if boss is not None:
            threading.Thread(target=boss.close, name="stop-boss", daemon=True).start()  # alongside the sidecars
        self._stop(everything)
        if boss is not None:
            boss.close()  # waits for the thread's stops (the BOSS's lock), each bounded by its stop_timeout

    # ----------------------------------------------------------------- control requests
    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer a control request (from the control server's threads)."""
        command = request.get("command")
        if command == "health":
            return self.health()
        return {"ok": False, "error": f"unknown command {command!r}; known: health"}

    def health(self) -> dict[str, Any]:
        with self._lock:
            running = sorted(self._running.values(), key=lambda entry: entry.spec.name)
            reloads, last_reload = self._reloads, self._last_reload
            boss = self._boss
        sidecars = [entry.health() for entry in running]
        problems: list[str] = []
        if boss is not None:
            sidecars += boss.health()
            problems = list(boss.problems)
        answer = {
            "ok": True,
            "healthy": bool(sidecars)
            and all(entry["healthy"] for entry in sidecars)
            and not self._stopping
            and not problems,
            "launcher": {
                "pid": os.getpid(),
                "config": self._config_file,
                "uptime": time.monotonic() - self._started,
                "reloads": reloads,
                "last_reload": last_reload,
                "stopping": self._stopping,
            },
            "sidecars": sidecars,
        }
        if boss is not None:
            answer["boss"] = {"name": boss.name, "realm": boss.realm, "problems": problems}
        return answer


def unique_instance_name() -> str:
    """BOSS's default ``--name``: the host name and the first part of a uuid4."""
    return f"{platform.node()}_{str(uuid.uuid4()).split('-')[0]}"
