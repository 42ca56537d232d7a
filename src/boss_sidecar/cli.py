"""The ``boss-sidecar`` command: ``run`` the launcher, ask it for ``health``, ``check-config`` a file,
or run BOSS's HERO configurations with BOSS's own flags (``boss``).

``health`` exits 0 when every sidecar is healthy, 1 when one is not, 2 when no launcher answers,
so it can serve as a container HEALTHCHECK as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boss_sidecar import template
from boss_sidecar.errors import ConfigError

if TYPE_CHECKING:
    from boss_sidecar.config import LauncherConfig

HEALTHY, UNHEALTHY, UNREACHABLE = 0, 1, 2
ENV_CONFIG = "BOSS_SIDECAR_CONFIG"
ENV_LOG_LEVEL = "BOSS_SIDECAR_LOG_LEVEL"
ENV_LOG_FORMAT = "BOSS_SIDECAR_LOG_FORMAT"


def _parser() -> argparse.ArgumentParser:
    from boss_sidecar.control import ENV_SOCKET, REQUEST_TIMEOUT, default_socket_path  # noqa: PLC0415 - see main
    from boss_sidecar.logs import LOG_FORMATS, LOG_LEVELS  # noqa: PLC0415

    # The logging options are accepted before and after the subcommand; SUPPRESS keeps a
    # subcommand's unset option from overwriting one given before it.
    def logging_options(parser: argparse.ArgumentParser, top: bool) -> None:
        level = os.environ.get(ENV_LOG_LEVEL, "info") if top else argparse.SUPPRESS
        fmt = os.environ.get(ENV_LOG_FORMAT, "console") if top else argparse.SUPPRESS
        parser.add_argument("--log-level", choices=LOG_LEVELS, default=level, help=f"(${ENV_LOG_LEVEL}; info)")
        parser.add_argument("--log-format", choices=LOG_FORMATS, default=fmt, help=f"(${ENV_LOG_FORMAT}; console)")

    socket_help = f"control socket (${ENV_SOCKET}; default {default_socket_path()})"
    parser = argparse.ArgumentParser(
        prog="boss-sidecar", description="Run and check supervised zenoh sidecars.", allow_abbrev=False
    )
    logging_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the sidecars of a config file in the foreground")
    run.add_argument("config", nargs="?", type=Path, help=f"TOML file (${ENV_CONFIG}; else the embedded default)")
    run.add_argument("--socket", type=Path, help=socket_help)
    logging_options(run, top=False)

    health = commands.add_parser("health", help="ask the running launcher; exit 0 healthy, 1 unhealthy, 2 none")
    health.add_argument("--json", action="store_true", help="print the launcher's answer as JSON")
    health.add_argument("--socket", type=Path, help=socket_help)
    health.add_argument("--timeout", type=float, default=REQUEST_TIMEOUT, help="seconds to wait for an answer")
    logging_options(health, top=False)

    check = commands.add_parser("check-config", help="validate a config file without starting anything")
    check.add_argument("config", type=Path)
    logging_options(check, top=False)

    boss = commands.add_parser(
        "boss", help="BOSS's starter (same flags as heros-boss's `boss`): each HERO in a supervised worker"
    )
    boss.add_argument(
        "--log", default=None, help="loglevel: spam < debug < info. If not set, env var HEROS_LOG is used or INFO"
    )
    boss.add_argument("--expose", action="store_true", help="expose the BOSS object as a HERO named --name")
    boss.add_argument("--realm", default="heros", help="realm under which the HEROs are exposed")
    boss.add_argument("--no-autostart", action="store_true", help="turn off autostart")
    boss.add_argument("--name", help="name of the BOSS instance (unique if exposed; default: host name and a uuid)")
    boss.add_argument("-u", "--url", action="append", default=[], help="path or URL of a configuration (repeatable)")
    boss.add_argument(
        "-e", "--env", action="append", default=[], help="environment variable holding a configuration (BOSS always)"
    )
    boss.add_argument("--socket", type=Path, help=socket_help)
    return parser


STARTS_WORKERS = ("run", "boss")
"""Commands that start workers: the template starts first thing, importing zenoh and HEROS in a
process of its own while this one imports the rest (so those imports are in the functions below)."""


def _command(argv: Sequence[str] | None) -> str | None:
    """The command word of ``argv``, found before the full parser (and what it imports) is built."""
    words = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    words.add_argument("--log-level")
    words.add_argument("--log-format")
    words.add_argument("command", nargs="?")
    try:
        command: str | None = words.parse_known_args(argv)[0].command
    except argparse.ArgumentError:  # the full parser says what is wrong
        return None
    return command


def main(argv: Sequence[str] | None = None) -> int:
    if _command(argv) in STARTS_WORKERS:
        template.start()
    args = _parser().parse_args(argv)
    from boss_sidecar.logs import configure_logging  # noqa: PLC0415 - after the template started

    configure_logging(args.log_level, args.log_format)
    if args.command == "run":
        return _run(args)
    if args.command == "health":
        return _health(args)
    if args.command == "boss":
        return _boss(args)
    return _check_config(args.config)


BOSS_LEVELS = {"spam": "debug", "debug": "debug", "info": "info", "warning": "warning", "warn": "warning"}
BOSS_LEVELS |= {"error": "error", "critical": "critical"}


def boss_config(args: argparse.Namespace) -> LauncherConfig:
    """The launcher configuration BOSS's flags mean: one BOSS, its sources, every HERO in a sidecar."""
    from boss_sidecar.config import BossSpec, LauncherConfig  # noqa: PLC0415 - after the template started
    from boss_sidecar.launcher import unique_instance_name  # noqa: PLC0415
    from boss_sidecar.policy import SidecarPolicy  # noqa: PLC0415

    level = BOSS_LEVELS.get(str(args.log or os.environ.get("HEROS_LOG") or "INFO").lower())
    if level is None:
        raise ConfigError(f"--log (or HEROS_LOG) must be one of {', '.join(BOSS_LEVELS)}, got {args.log!r}")
    spec = BossSpec(
        urls=tuple(args.url),
        env=("BOSS", *args.env),  # BOSS appends to its default
        realm=args.realm,
        name=args.name or unique_instance_name(),
        expose=args.expose,
        autostart=not args.no_autostart,
        policy=SidecarPolicy(log_level=level),
    )
    return LauncherConfig("<boss-sidecar boss>", {}, spec)


def _boss(args: argparse.Namespace) -> int:
    from boss_sidecar.config import BOSS_EXTRA_MISSING, heros_boss_installed  # noqa: PLC0415 - see main
    from boss_sidecar.control import default_socket_path  # noqa: PLC0415
    from boss_sidecar.launcher import Launcher  # noqa: PLC0415
    from boss_sidecar.logs import configure_logging  # noqa: PLC0415

    if not heros_boss_installed():
        print(f"boss-sidecar boss: {BOSS_EXTRA_MISSING}", file=sys.stderr)
        return 1
    try:
        config = boss_config(args)
    except ConfigError as exc:
        print(f"boss-sidecar boss: {exc}", file=sys.stderr)
        return 2
    assert config.boss is not None
    configure_logging(config.boss.policy.log_level, args.log_format)
    return Launcher(None, args.socket or default_socket_path(), config=config).run()


def _run(args: argparse.Namespace) -> int:
    from boss_sidecar.control import default_socket_path  # noqa: PLC0415 - see main
    from boss_sidecar.launcher import Launcher  # noqa: PLC0415

    config = args.config or (Path(os.environ[ENV_CONFIG]) if os.environ.get(ENV_CONFIG) else None)
    return Launcher(config, args.socket or default_socket_path()).run()


def _check_config(path: Path) -> int:
    from boss_sidecar.boss_check import check_boss_sources  # noqa: PLC0415 - only this command checks
    from boss_sidecar.config import load_config  # noqa: PLC0415

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    names = ", ".join(sorted(config.sidecars))
    if config.sidecars or config.boss is None:
        count = f"{len(config.sidecars)} sidecar{'s' if len(config.sidecars) != 1 else ''}"
        print(f"{config.file}: ok ({count}: {names})")
    if config.boss is None:
        return 0
    report = check_boss_sources(config.boss)
    for problem in report.problems:
        print(problem, file=sys.stderr)
    verdict = "errors" if report.problems else "ok"
    heroes = f"{len(report.heroes)} HERO{'s' if len(report.heroes) != 1 else ''}"
    print(f"{config.file}: {verdict} ([boss] {heroes}: {', '.join(report.heroes)})")
    return 1 if report.problems else 0


def _health(args: argparse.Namespace) -> int:
    from boss_sidecar.control import LauncherUnreachable, default_socket_path, request  # noqa: PLC0415 - see main

    path = args.socket or default_socket_path()
    try:
        answer = request(path, {"command": "health"}, timeout=args.timeout)
    except LauncherUnreachable as exc:
        print(f"boss-sidecar health: {exc}", file=sys.stderr)
        return UNREACHABLE
    if not answer.get("ok"):
        print(f"boss-sidecar health: the launcher refused: {answer.get('error')}", file=sys.stderr)
        return UNREACHABLE
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(health_table(answer))
    return HEALTHY if answer.get("healthy") else UNHEALTHY


# ----------------------------------------------------------------- the health table
COLUMNS = (
    ("SIDECAR", "name"),
    ("STATE", "state"),
    ("OK", "healthy"),
    ("PID", "pid"),
    ("INC", "incarnation"),
    ("UPTIME", "uptime"),
    ("RESTARTS", "restarts"),
    ("RSS", "rss_bytes"),
    ("CPU%", "cpu_percent"),
    ("THREADS", "threads"),
    ("FDS", "open_fds"),
    ("HB RTT", "heartbeat_rtt"),
    ("HB AGE", "heartbeat_age"),
    ("BOSS", "hero"),
)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "healthy":
        return "yes" if value else "NO"
    if key == "rss_bytes":
        return f"{value / 1e6:.1f}MB"
    if key == "cpu_percent":
        return f"{value:.1f}"
    if key == "heartbeat_rtt":
        return f"{value * 1000:.1f}ms"
    if key in ("uptime", "heartbeat_age"):
        return f"{value:.1f}s"
    return str(value)


def health_table(answer: dict[str, Any]) -> str:
    """A person's view of the launcher's answer: one row per sidecar, then why any is not healthy."""
    sidecars = answer.get("sidecars", [])
    rows = [[title for title, _ in COLUMNS]]
    rows += [[_cell(key, entry.get(key)) for _, key in COLUMNS] for entry in sidecars]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    for entry in sidecars:
        notes = [f"reason: {entry.get('reason')}"]
        if entry.get("last_exit"):
            notes.append(f"last exit: {entry['last_exit']}")
        if entry.get("error"):
            notes.append(f"error: {entry['error']}")
        lines.append(f"{entry.get('name')}: " + "; ".join(notes))
    for problem in answer.get("boss", {}).get("problems", []):
        lines.append(f"BOSS source problem: {problem}")
    launcher = answer.get("launcher", {})
    verdict = "healthy" if answer.get("healthy") else "UNHEALTHY"
    lines.append(f"launcher pid {launcher.get('pid')} ({launcher.get('config')}): {verdict}")
    if launcher.get("last_reload") not in (None, "applied"):
        lines.append(f"last reload {launcher['last_reload']}")
    return "\n".join(lines)
