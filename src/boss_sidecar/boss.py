"""BOSS's ``boss.boss.BOSS``, with each HERO in a supervised sidecar.

Same constructor and methods as heros-boss's BOSS (``add_hero_source``, ``refresh_hero_sources``,
``add_hero``, ``start_hero``, ``stop_hero``, ``restart_hero``, ``remove_hero``, ``start_all``,
``stop_all``, ``status``), and ``status()`` in BOSS's shape. What differs: every HERO runs in a
sidecar's worker, started as a fresh interpreter and restarted by the supervision policy when it
crashes or hangs; this object (in the host) never imports zenoh; a worker dies with its host.
The launcher runs ``boss-sidecar boss`` and ``[boss]`` configurations with this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from boss_sidecar import template
from boss_sidecar.boss_sources import Source, document_problem, hero_documents, read_url, redact
from boss_sidecar.compat import MultiprocessRPC
from boss_sidecar.errors import ConfigError, SidecarCrashed, SidecarError
from boss_sidecar.logs import get_logger
from boss_sidecar.policy import SidecarPolicy
from boss_sidecar.sidecar import Sidecar, zenoh_config_source
from boss_sidecar.states import FINAL_STATES, StateChange
from boss_sidecar.states import SidecarState as S

_log = get_logger("boss_sidecar.boss")

HERO_WORKER = "boss_sidecar.worker.heroes:BossHero"
MANAGEMENT_CLASS = "boss_sidecar.worker.management.BossManagement"
Parser = Callable[[Any], Any]


def parse_url(url: str) -> Any:
    """The JSON at ``url`` (path, ``file://``, ``http(s)://user:pw@...``): a parser for ``add_hero_source``."""
    return Source("url", url).read()


def parse_string(text: str) -> Any:
    """``text`` as JSON: a parser for ``add_hero_source`` (BOSS's ``parse_string``)."""
    import json  # noqa: PLC0415 - only for this parser

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc}") from None


def read_source(source: Source) -> Any:
    """Parser for a ``Source`` (URL or environment variable), read anew at every refresh."""
    return source.read()


def _tagged(document: dict[str, Any], boss_name: str) -> dict[str, Any]:
    """The document as BOSS keeps it: a copy whose tags end with ``BOSS: <name>`` (``generate_tags``)."""
    config = copy.deepcopy(document)
    config["tags"] = [*config.get("tags", []), f"BOSS: {boss_name}"]
    return config


def _label(target: Any, index: int) -> str:
    if isinstance(target, Source):
        return target.label
    if isinstance(target, str) and "\n" not in target and not target.lstrip().startswith(("{", "[")):
        return f"url {redact(target)}"
    return f"source {index + 1}"


class _Settled:
    """Waits, without polling, for a restarting sidecar to run again (or to give up)."""

    def __init__(self, sidecar: Sidecar) -> None:
        self._sidecar = sidecar
        self._changed = threading.Condition()
        sidecar.on_state_change(self._notify)

    def _notify(self, _change: StateChange) -> None:
        with self._changed:
            self._changed.notify_all()

    def running(self, timeout: float) -> bool:
        """True once the sidecar is RUNNING; False if it stopped or failed, or after ``timeout``."""
        with self._changed:
            self._changed.wait_for(lambda: self._sidecar.state in (S.RUNNING, *FINAL_STATES), timeout)
        return self._sidecar.state == S.RUNNING


@dataclass
class _Read:
    """What one reading of every source found: documents by ``_id`` with their source, and what went wrong."""

    found: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    keep: set[str] = field(default_factory=set)
    """``_id`` of invalid documents: a HERO running under that name is left as it is."""
    failed: set[str] = field(default_factory=set)
    """Sources that could not be read: their HEROs are left as they are."""
    problems: list[str] = field(default_factory=list)


@dataclass(eq=False)
class _Hero:
    """One HERO this BOSS knows: its configuration, whether it should run, and its sidecar."""

    config: dict[str, Any]
    source: str | None = None
    wanted: bool = False
    sidecar: Sidecar | None = None
    starter: threading.Thread | None = None
    error: str | None = None

    @property
    def status(self) -> str:
        """BOSS's word: running, stopped (on request) or failed (would not build, or gave up restarting)."""
        if not self.wanted:
            return "stopped"
        if self.error is not None or (self.sidecar is not None and self.sidecar.state in FINAL_STATES):
            return "failed"
        return "running"


class BOSS(MultiprocessRPC):
    """heros-boss's BOSS whose HERO workers are supervised sidecars.

    ``loop`` and ``remote_pipe`` are used as BOSS uses them: with a pipe, a ``BOSSRemote`` at its
    other end can call this object. ``zenoh`` configures every HERO worker's session (None: the
    ``HEROS_ZENOH_CONFIG`` environment variable, as HEROS does); ``policy`` is each sidecar's.
    """

    def __init__(
        self,
        name: str,
        configs: Iterable[dict[str, Any]] = (),
        loop: asyncio.AbstractEventLoop | None = None,
        realm: str = "heros",
        remote_pipe: Connection | None = None,
        *,
        zenoh: dict[str, Any] | str | None = None,
        **policy: Any,
    ) -> None:
        self.name = name
        self.realm = realm
        self.hero_config_sources: list[list[Any]] = []
        self.problems: list[str] = []
        """What the last refresh found wrong with a source or a document."""
        self._zenoh = zenoh
        self._policy = policy
        self._heroes: dict[str, _Hero] = {}
        self._lock = threading.RLock()
        self._management: _Hero | None = None
        # A bad zenoh config or policy fails here, not once per HERO.
        self._forks_from_template = SidecarPolicy.from_options(policy).worker_template
        zenoh_config_source(zenoh)
        for config in configs:
            self.add_hero(config)
        if remote_pipe is not None:
            if loop is None:
                raise ConfigError("a remote_pipe needs the loop its requests are served on")
            MultiprocessRPC.__init__(self, loop, remote_pipe)

    # ----------------------------------------------------------------- sources
    def add_hero_source(self, parser: Parser, target: Any) -> None:
        """Register a source: ``parser(target)`` returns a document or ``{"rows": [...]}`` at each refresh."""
        with self._lock:
            self.hero_config_sources.append([parser, target])

    def refresh_hero_sources(self, auto_start: bool = True) -> None:
        """Re-read every source: restart HEROs whose document changed (if running), add new ones (started when
        ``auto_start``), remove those gone. A source that cannot be read, or an invalid document, is a problem
        (logged, in ``problems``); the HEROs it held keep running as they were."""
        with self._lock:
            read = self._read_sources()
            for problem in read.problems:
                _log.error("HERO source problem", problem=problem)
            self.problems = read.problems
            if self._forks_from_template:  # the template imports what the workers will need, once
                template.preload(HERO_WORKER, *sorted({document["classname"] for document, _ in read.found.values()}))
            gone = [
                hero_id
                for hero_id, hero in self._heroes.items()
                if hero_id not in read.found and hero_id not in read.keep and hero.source not in read.failed
            ]
            changed = []
            for hero_id, (document, label) in read.found.items():
                hero = self._heroes.get(hero_id)
                if hero is not None:
                    hero.source = label
                    config = _tagged(document, self.name)
                    if config != hero.config:
                        changed.append((hero, config, hero.wanted))
            self._stop_many([self._heroes[hero_id] for hero_id in gone] + [hero for hero, _, was in changed if was])
            for hero_id in gone:
                _log.info("removing HERO: no longer in any source", hero=hero_id)
                del self._heroes[hero_id]
            for hero, config, was_running in changed:
                _log.info("HERO changed", hero=config["_id"])
                hero.config = config
                if was_running:
                    hero.wanted = True
                    self._launch(hero)
            for hero_id, (document, label) in read.found.items():
                if hero_id not in self._heroes:
                    self.add_hero(document, auto_start, source=label)

    def _read_sources(self) -> _Read:
        read = _Read()
        for index, (parser, target) in enumerate(self.hero_config_sources):
            label = _label(target, index)
            try:
                data = parser(target)
            except Exception as exc:
                text = str(exc)
                read.problems.append(text if text.startswith(label) else f"{label}: {text}")
                read.failed.add(label)
                continue
            documents = hero_documents(data, label)
            read.problems += documents.problems
            read.keep |= documents.invalid_ids
            for hero_id, document in documents.documents.items():
                if hero_id in read.found:
                    first = read.found[hero_id][1]
                    read.problems.append(f"{label}: _id {hero_id!r} is also in {first}; that one is used")
                    continue
                read.found[hero_id] = (document, label)
        return read

    # ----------------------------------------------------------------- HEROs
    def add_hero(self, config: dict[str, Any], auto_start: bool = True, *, source: str | None = None) -> None:
        """Add a HERO (its ``_id`` must be new to be added; an existing one is only started when ``auto_start``)."""
        problem = document_problem(config)
        if problem is not None:
            name = config.get("_id") if isinstance(config, dict) else None
            raise ConfigError(f"invalid HERO document{f' {name!r}' if isinstance(name, str) else ''}: {problem}")
        with self._lock:
            name = config["_id"]
            if name not in self._heroes:
                document = {**config, "arguments": dict(config.get("arguments", {}))}
                self._heroes[name] = _Hero(_tagged(document, self.name), source)
            if auto_start:
                self.start_hero(name)

    def _hero(self, name: str) -> _Hero:
        hero = self._heroes.get(name)
        if hero is None:
            raise NameError(f"HERO with name {name} not run by this BOSS. Available HEROs are {sorted(self._heroes)}")
        return hero

    def start_hero(self, name: str) -> None:
        """Start the HERO's sidecar (in the background, as BOSS does); a failed one is started afresh."""
        with self._lock:
            hero = self._hero(name)
            if hero.status == "running":
                return
            if hero.sidecar is not None:  # failed: clear it away first
                self._stop_many([hero])
            hero.wanted = True
            self._launch(hero)

    def stop_hero(self, name: str) -> None:
        """Stop the HERO's sidecar, within its stop_timeout."""
        with self._lock:
            self._stop_many([self._hero(name)])

    def restart_hero(self, name: str) -> None:
        self.stop_hero(name)
        self.start_hero(name)

    def remove_hero(self, name: str) -> None:
        with self._lock:
            self.stop_hero(name)
            self._heroes.pop(name, None)

    def start_all(self) -> None:
        with self._lock:
            for name in list(self._heroes):
                self.start_hero(name)

    def stop_all(self) -> None:
        """Stop every HERO, in parallel."""
        with self._lock:
            self._stop_many(list(self._heroes.values()))

    def status(self) -> dict[str, dict[str, Any]]:
        """BOSS's ``{name: {"config", "object", "status"}}``, plus the supervisor's facts about each worker."""
        with self._lock:
            heroes = dict(self._heroes)
        return {name: self._facts(hero) for name, hero in heroes.items()}

    @staticmethod
    def _facts(hero: _Hero) -> dict[str, Any]:
        entry: dict[str, Any] = {"config": copy.deepcopy(hero.config), "object": None, "status": hero.status}
        health = hero.sidecar.health().to_dict() if hero.sidecar is not None else {}
        for key in ("pid", "incarnation", "restarts", "last_exit", "state", "healthy", "uptime"):
            entry[key] = health.get(key)
        entry["state"] = entry["state"] or "stopped"
        entry["error"] = hero.error
        entry["source"] = hero.source
        return entry

    # ----------------------------------------------------------------- the management HERO
    def expose(self) -> None:
        """Serve BOSS's remote API as a HERO named after this BOSS (``boss --expose``), from a worker."""
        with self._lock:
            if self._management is not None:
                return
            document = {"_id": self.name, "classname": MANAGEMENT_CLASS, "arguments": {}}
            self._management = _Hero(document, "--expose", wanted=True)
            self._launch(self._management, management=True)

    # ----------------------------------------------------------------- health and shutdown
    def health(self) -> list[dict[str, Any]]:
        """One entry per HERO worker (and the management HERO) in the launcher's health shape."""
        with self._lock:
            heroes = sorted(self._heroes.items())
            management = self._management
        entries = []
        for name, hero in heroes + ([(self.name, management)] if management is not None else []):
            if hero.sidecar is not None:
                entry = hero.sidecar.health().to_dict()
            else:
                entry = {"name": name, "state": "stopped", "healthy": True, "reason": "not started"}
            entry["name"] = name
            entry["hero"] = hero.status
            entry["error"] = hero.error
            if hero.error is not None:
                entry["healthy"] = False
            elif hero.wanted and hero.starter is not None and hero.starter.is_alive():
                entry["healthy"], entry["reason"] = False, "building the HERO"
            elif not hero.wanted:
                entry["healthy"], entry["reason"] = True, "stopped on request (BOSS status 'stopped')"
            entries.append(entry)
        return entries

    def close(self) -> None:
        """Stop every HERO and the management HERO; nothing is left running."""
        with self._lock:
            everything = list(self._heroes.values())
            if self._management is not None:
                everything.append(self._management)
                self._management = None
            self._stop_many(everything)

    # ----------------------------------------------------------------- starting and stopping workers
    def _launch(self, hero: _Hero, *, management: bool = False) -> None:
        sidecar = Sidecar(hero.config["_id"], self._zenoh, **self._policy)
        hero.sidecar, hero.error = sidecar, None
        hero.starter = threading.Thread(
            target=self._bring_up, args=(hero, sidecar, management), name=f"start-{hero.config['_id']}", daemon=True
        )
        hero.starter.start()

    def _bring_up(self, hero: _Hero, sidecar: Sidecar, management: bool) -> None:
        """Start the worker, then build the HERO in it; a failure is kept (status "failed"), not raised."""
        name = hero.config["_id"]
        step = "start the worker"
        try:
            settled = _Settled(sidecar)
            sidecar.start()
            step = "build the HERO"
            boss = {"boss": sidecar.expose(_RemoteAPI(self))} if management else {}
            while True:
                try:
                    sidecar.host(HERO_WORKER, document=hero.config, boss_name=self.name, realm=self.realm, **boss)
                    break
                except SidecarCrashed:  # the worker died while building: build again in the next one
                    if not settled.running(sidecar.policy.start_timeout + sidecar.policy.backoff_max):
                        raise
        except Exception as exc:
            if hero.sidecar is not sidecar or not hero.wanted:  # stopped meanwhile: not a failure
                return
            hero.error = f"{step} failed: {exc}"
            _log.error("HERO did not come up", hero=name, error=hero.error)
            with contextlib.suppress(SidecarError):
                sidecar.stop()
            return
        _log.info("HERO up", hero=name, worker_pid=sidecar.pid)

    @staticmethod
    def _stop_many(heroes: list[_Hero]) -> None:
        """Stop these HEROs' sidecars in parallel, each bounded by its stop_timeout."""

        def stop(hero: _Hero, sidecar: Sidecar) -> None:
            with contextlib.suppress(SidecarError):
                sidecar.stop()
            if hero.starter is not None:
                hero.starter.join(sidecar.policy.start_timeout)

        threads = []
        for hero in heroes:
            sidecar, hero.sidecar, hero.wanted, hero.error = hero.sidecar, None, False, None
            if sidecar is not None:
                thread = threading.Thread(target=stop, args=(hero, sidecar), name=f"stop-{sidecar.name}", daemon=True)
                thread.start()
                threads.append((thread, sidecar))
        deadline = time.monotonic() + max((s.policy.stop_timeout for _, s in threads), default=0.0) + 2.0
        for thread, _ in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


REMOTE_METHODS = frozenset(
    {"status", "start_hero", "stop_hero", "restart_hero", "add_hero", "remove_hero", "start_all", "stop_all"}
    | {"refresh_hero_sources"}
)
"""The methods of BOSS that heros-boss's ``BOSSRemote`` calls: all the management HERO may call here."""


class _RemoteAPI:
    """What the management HERO's worker may call in the host: BOSS's remote methods and nothing else."""

    def __init__(self, boss: BOSS) -> None:
        self._boss = boss

    def __getattr__(self, name: str) -> Any:
        if name not in REMOTE_METHODS:
            raise AttributeError(f"{name!r} is not part of BOSS's remote API")
        return getattr(self._boss, name)


__all__ = ["BOSS", "parse_string", "parse_url", "read_source", "read_url"]
