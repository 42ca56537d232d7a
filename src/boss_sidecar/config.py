"""The launcher's TOML configuration: one ``[sidecars.NAME]`` table per sidecar, checked in full.

A table holds the zenoh configuration (an inline table, or the path of a json5 file relative to
the config file), any SidecarPolicy field, and ``objects`` to host in BOSS's
``{_id, classname, arguments}`` form. Every problem is collected and reported at once, each
naming file, table and field, what was expected and what was found; unknown keys are problems
too. Zenoh configurations and classnames are checked in a child interpreter (the host never
imports zenoh), so an invalid file is refused before anything starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import json
import subprocess
import sys
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boss_sidecar._process import worker_environment
from boss_sidecar.errors import ConfigError
from boss_sidecar.policy import SidecarPolicy
from boss_sidecar.sidecar import zenoh_config_source

POLICY_KEYS = tuple(spec.name for spec in dataclasses.fields(SidecarPolicy))
SIDECAR_KEYS = ("zenoh", "objects", *POLICY_KEYS)
OBJECT_KEYS = ("_id", "classname", "arguments")
TOP_KEYS = ("sidecars", "boss")
BOSS_KEYS = ("urls", "env", "realm", "name", "expose", "autostart", "zenoh", *POLICY_KEYS)
DEFAULT_CONFIG = "default.toml"
CHECK_TIMEOUT = 60.0
"""Seconds the child interpreter may take to import zenoh and the hosted classes."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the file, and where."""

    file: str
    table: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = "".join(
            part for part in (f" [{self.table}]" if self.table else "", f" {self.field}" if self.field else "")
        )
        return f"{self.file}:{where}: {self.message}" if where else f"{self.file}: {self.message}"


class ConfigProblems(ConfigError):
    """The configuration file is invalid; ``problems`` lists everything found, not only the first."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        count = f"{len(problems)} error{'s' if len(problems) != 1 else ''}"
        super().__init__(f"{count} in {file}:\n" + "\n".join(f"  {problem}" for problem in problems))


@dataclass(frozen=True, slots=True)
class SidecarSpec:
    """What one sidecar runs with; two equal specs mean a reload leaves that sidecar alone."""

    name: str
    zenoh: dict[str, Any] | str | None
    """An inline configuration, the absolute path of a json5 file, or None for zenoh's defaults."""
    zenoh_digest: str | None
    """SHA-256 of the json5 file, so editing the file counts as a change on reload."""
    policy: SidecarPolicy
    objects: tuple[dict[str, Any], ...]
    """BOSS configuration documents ``{"_id", "classname", "arguments"}``, as ``Sidecar.host`` takes them."""

    def policy_options(self) -> dict[str, Any]:
        return dataclasses.asdict(self.policy)


@dataclass(frozen=True, slots=True)
class BossSpec:
    """BOSS's HERO sources and starter options (``boss-sidecar boss`` flags, or a ``[boss]`` table)."""

    urls: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    realm: str = "heros"
    name: str | None = None
    """None: host name and a short uuid, made once per launcher (as BOSS does per run)."""
    expose: bool = False
    autostart: bool = True
    zenoh: dict[str, Any] | str | None = None
    """Each HERO worker's session: like a sidecar's, and ``HEROS_ZENOH_CONFIG`` when None (as HEROS does)."""
    zenoh_digest: str | None = None
    policy: SidecarPolicy = dataclasses.field(default_factory=SidecarPolicy)

    def policy_options(self) -> dict[str, Any]:
        return dataclasses.asdict(self.policy)


@dataclass(frozen=True, slots=True)
class LauncherConfig:
    file: str
    sidecars: dict[str, SidecarSpec]
    boss: BossSpec | None = None


BOSS_EXTRA_MISSING = 'BOSS configurations need heros-boss: pip install "boss-sidecar[boss]"'


def heros_boss_installed() -> bool:
    """Whether heros-boss is installed: its package ``boss`` with the factory's module, found without
    importing it (it imports zenoh) and without ``importlib.metadata`` (12 ms of every launcher start)."""
    spec = importlib.util.find_spec("boss")
    locations = (spec.submodule_search_locations if spec is not None else None) or []
    return any((Path(location) / "configuration.py").is_file() for location in locations)


def _found(value: object) -> str:
    """How a found value reads in an error message: its TOML kind and, if short, the value."""
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", dict: "a table", list: "an array"}
    kind = kinds.get(type(value), f"a {type(value).__name__}")
    text = json.dumps(value) if isinstance(value, bool | int | float | str) else ""
    return f"{kind} {text}" if text and len(text) <= 60 else kind


def _unknown(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key{hint}; expected one of: {', '.join(known)}"


class _Checker:
    """Walks the parsed file once, collecting problems and the specs of the valid tables."""

    def __init__(self, file: str, base: Path) -> None:
        self.file = file
        self.base = base
        self.found: list[tuple[int, Problem]] = []
        self.position = -1
        """Which sidecar table is being checked: problems are reported grouped by it, in file order."""
        self.deferred_zenoh: dict[str, tuple[tuple[str, str | None], str, str, int]] = {}
        self.deferred_classes: dict[str, tuple[str, str, str, int]] = {}
        self.boss_spec: BossSpec | None = None

    @property
    def problems(self) -> list[Problem]:
        return [problem for _, problem in sorted(self.found, key=lambda item: item[0])]

    def problem(self, table: str | None, field: str | None, message: str, position: int | None = None) -> None:
        where = self.position if position is None else position
        self.found.append((where, Problem(self.file, table, field, message)))

    def document(self, data: dict[str, Any]) -> dict[str, SidecarSpec]:
        for key in data:
            if key not in TOP_KEYS:
                self.problem(None, key, _unknown(key, TOP_KEYS) + " (each sidecar is a [sidecars.NAME] table)")
        if "boss" in data:
            self.boss_spec = self.boss(data["boss"])
            if "sidecars" not in data:
                return {}
        tables = data.get("sidecars")
        if tables is None:
            self.problem(None, "sidecars", "expected a [boss] table or at least one [sidecars.NAME] table, found none")
            return {}
        if not isinstance(tables, dict):
            self.problem(None, "sidecars", f"expected a table of sidecar tables, found {_found(tables)}")
            return {}
        if not tables:
            self.problem("sidecars", None, "expected at least one [sidecars.NAME] table, found none")
        specs = {}
        for self.position, (name, table) in enumerate(tables.items()):
            spec = self.sidecar(name, table)
            if spec is not None:
                specs[name] = spec
        return specs

    def sidecar(self, name: str, table: object) -> SidecarSpec | None:
        where = f"sidecars.{name}"
        before = len(self.found)
        if not name.strip():
            self.problem(where, None, "expected a non-empty sidecar name")
        if not isinstance(table, dict):
            self.problem("sidecars", name, f"expected a table, found {_found(table)}")
            return None
        for key in table:
            if key not in SIDECAR_KEYS:
                self.problem(where, key, _unknown(key, SIDECAR_KEYS))
        zenoh = self.zenoh(where, table.get("zenoh"))
        policy = self.policy(where, {key: value for key, value in table.items() if key in POLICY_KEYS})
        objects = self.objects(where, table.get("objects", []))
        if len(self.found) > before or policy is None:
            return None
        config, digest = zenoh
        return SidecarSpec(name, config, digest, policy, objects)

    def zenoh(self, where: str, value: object) -> tuple[dict[str, Any] | str | None, str | None]:
        if value is None:
            return None, None
        if isinstance(value, dict):
            try:
                source = zenoh_config_source(value)
            except ConfigError:
                self.problem(where, "zenoh", "expected plain values (no dates or times) in the zenoh table")
                return None, None
            self.deferred_zenoh[f"{where}.zenoh"] = (source, where, "zenoh", self.position)
            return value, None
        if isinstance(value, str):
            path = (self.base / value).resolve()
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                self.problem(where, "zenoh", f"expected a readable json5 file, found {value!r} ({exc.strerror})")
                return None, None
            self.deferred_zenoh[f"{where}.zenoh"] = (("file", str(path)), where, "zenoh", self.position)
            return str(path), digest
        expected = "a table (zenoh configuration) or a string (json5 file path)"
        self.problem(where, "zenoh", f"expected {expected}, found {_found(value)}")
        return None, None

    def boss(self, table: object) -> BossSpec | None:
        """The ``[boss]`` table: BOSS's sources (``urls``, ``env``) and starter options, plus a sidecar's policy."""
        if not isinstance(table, dict):
            self.problem(None, "boss", f"expected a table, found {_found(table)}")
            return None
        before = len(self.found)
        if not heros_boss_installed():
            self.problem("boss", None, BOSS_EXTRA_MISSING)
        for key in table:
            if key not in BOSS_KEYS:
                self.problem("boss", key, _unknown(key, BOSS_KEYS))
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("urls", "env"):
            value = table.get(key, [])
            if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
                self.problem("boss", key, f"expected an array of non-empty strings, found {_found(value)}")
            lists[key] = tuple(value) if isinstance(value, list) else ()
        lists["urls"] = tuple(self.source_url(url) for url in lists["urls"])
        if not table.get("urls") and not table.get("env"):
            self.problem("boss", None, "expected 'urls' or 'env' to name at least one HERO source")
        texts: dict[str, str | None] = {}
        for key, fallback in (("realm", "heros"), ("name", None)):
            value = table.get(key, fallback)
            if value is not None and (not isinstance(value, str) or not value):
                self.problem("boss", key, f"expected a non-empty string, found {_found(value)}")
            texts[key] = value
        flags: dict[str, bool] = {}
        for flag, default in (("expose", False), ("autostart", True)):
            found = table.get(flag, default)
            if not isinstance(found, bool):
                self.problem("boss", flag, f"expected true or false, found {_found(found)}")
            flags[flag] = bool(found)
        zenoh, digest = self.zenoh("boss", table.get("zenoh"))
        policy = self.policy("boss", {key: value for key, value in table.items() if key in POLICY_KEYS})
        if len(self.found) > before or policy is None:
            return None
        return BossSpec(
            lists["urls"],
            lists["env"],
            texts["realm"] or "heros",
            texts["name"],
            flags["expose"],
            flags["autostart"],
            zenoh,
            digest,
            policy,
        )

    def source_url(self, url: str) -> str:
        """A relative path (no URL scheme) is relative to the config file, as a zenoh json5 path is."""
        if urllib.parse.urlsplit(url).scheme or Path(url).is_absolute():
            return url
        return str((self.base / url).resolve())

    def policy(self, where: str, options: dict[str, Any]) -> SidecarPolicy | None:
        """SidecarPolicy checks each field; trying them one by one reports every bad one."""
        valid = True
        for key, value in options.items():
            try:
                SidecarPolicy(**{key: value})
            except ConfigError as exc:
                valid = False
                self.problem(where, key, str(exc).removeprefix(f"{key} "))
        if not valid:
            return None
        try:
            return SidecarPolicy(**options)
        except ConfigError as exc:
            self.problem(where, None, str(exc))
            return None

    def objects(self, where: str, value: object) -> tuple[dict[str, Any], ...]:
        if not isinstance(value, list):
            self.problem(where, "objects", f"expected an array of tables ([[{where}.objects]]), found {_found(value)}")
            return ()
        documents: list[dict[str, Any]] = []
        ids: set[str] = set()
        for index, item in enumerate(value):
            table = f"{where}.objects[{index}]"
            if not isinstance(item, dict):
                self.problem(table, None, f"expected a table {{_id, classname, arguments}}, found {_found(item)}")
                continue
            for key in item:
                if key not in OBJECT_KEYS:
                    self.problem(table, key, _unknown(key, OBJECT_KEYS))
            classname, object_id, arguments = item.get("classname"), item.get("_id"), item.get("arguments", {})
            if classname is None:
                self.problem(table, "classname", "missing; expected 'package.module:Class'")
            elif not isinstance(classname, str) or not classname:
                self.problem(table, "classname", f"expected a string 'package.module:Class', found {_found(classname)}")
            else:
                self.deferred_classes[f"{table}.classname"] = (classname, table, "classname", self.position)
            if object_id is not None and not isinstance(object_id, str):
                self.problem(table, "_id", f"expected a string, found {_found(object_id)}")
            elif object_id is not None and object_id in ids:
                self.problem(table, "_id", f"expected a unique name, found {object_id!r} again")
            elif object_id is not None:
                ids.add(object_id)
            if not isinstance(arguments, dict):
                self.problem(table, "arguments", f"expected a table of keyword arguments, found {_found(arguments)}")
            documents.append(dict(item))
        return tuple(documents)

    def run_deferred(self) -> None:
        """Ask a child interpreter to parse the zenoh configurations and import the classes."""
        if not self.deferred_zenoh and not self.deferred_classes:
            return
        request = {
            "zenoh": {key: list(entry[0]) for key, entry in self.deferred_zenoh.items()},
            "classes": {key: entry[0] for key, entry in self.deferred_classes.items()},
        }
        try:
            errors = check_in_child(request)
        except CheckFailed as exc:
            self.problem(None, None, f"could not check zenoh configurations and classnames: {exc}")
            return
        for key, message in errors.items():
            _, table, field, position = self.deferred_zenoh.get(key) or self.deferred_classes[key]
            self.problem(table, field, message, position)


class CheckFailed(ConfigError):
    """The child interpreter that checks imports and zenoh configurations did not answer."""


def check_in_child(request: dict[str, Any]) -> dict[str, str]:
    """Ask ``boss_sidecar.worker.check`` in a fresh interpreter (the host never imports zenoh): errors by key."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "boss_sidecar.worker.check"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT,
            env=worker_environment(),
            check=False,
        )
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise CheckFailed(f"the checker exited with {done.returncode}: {done.stderr.strip()[-500:]}")
        errors: dict[str, str] = json.loads(lines[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise CheckFailed(str(exc)) from None
    return errors


def parse_config(text: str, file: str, base: Path, *, check_imports: bool = True) -> LauncherConfig:
    """Validate a configuration text; raises ConfigProblems listing everything wrong."""
    checker = _Checker(file, base)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigProblems(file, [Problem(file, None, None, f"not valid TOML: {exc}")]) from None
    specs = checker.document(data)
    if check_imports:
        checker.run_deferred()
    if checker.problems:
        raise ConfigProblems(file, checker.problems)
    return LauncherConfig(file, specs, checker.boss_spec)


def load_config(path: str | Path | None, *, check_imports: bool = True) -> LauncherConfig:
    """Read and validate ``path``, or the embedded default configuration when it is None."""
    if path is None:
        text = (Path(__file__).parent / DEFAULT_CONFIG).read_text(encoding="utf-8")  # package data, on disk
        return parse_config(text, f"<embedded {DEFAULT_CONFIG}>", Path.cwd(), check_imports=check_imports)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise ConfigProblems(str(file), [Problem(str(file), None, None, f"cannot read: {reason}")]) from None
    return parse_config(text, str(file), file.resolve().parent, check_imports=check_imports)
