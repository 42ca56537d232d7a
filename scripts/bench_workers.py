"""Cost per worker: N HEROs under heros-boss's ``boss`` and under ``boss-sidecar boss``, in one run.

The same HERO configuration on both sides: N BOSS documents ``{_id, classname, arguments}`` of a
small plain class (``bench_workers_hero.Plain``), which heros-boss's factory makes a HERO.

- BOSS: the ``boss`` console script of heros-boss, ``boss -u file://docs.json --name ... --log error``;
  it forks one worker per HERO from its main process.
- boss-sidecar (template): ``boss-sidecar boss`` with the same flags; each HERO in a supervised worker
  forked from the template process (the default).
- boss-sidecar (fresh), for the sizes in ``--fresh``: the launcher with the same documents in a
  ``[boss]`` table with ``worker_template = false``: every worker a fresh interpreter.

Every session is a client of one zenoh router on loopback (a Python session in router mode).
Per system: USS and PSS per worker (psutil ``memory_full_info``; the workers are the pids
``boss-sidecar health --json`` lists, BOSS's are its main process's children), the total PSS of all
its processes (main process or launcher, template and workers), the time from start until every HERO
answers (a HEROS ``RemoteHERO`` client process, started at the same moment, calls each), and for
boss-sidecar the restart time after kill -9 of a HERO's worker until that HERO answers the client
again (BOSS does not restart a killed worker), the median of ``--kills`` per run.
Both sides start from bytecode (``compile_bytecode``). Each system runs ``--repeat`` times per size,
in rotated order; the medians are reported.
Goals: PSS per worker <= 1.2x BOSS's; time until every HERO answers <= BOSS's; restart from the
template no slower than from a fresh interpreter.

``--bare N`` also times bare starts, alternated N times: BOSS's one interpreter against the launcher
and its template (``boss-sidecar boss`` starts the template first), until the process that forks is ready.

Usage: python scripts/bench_workers.py [--quick] [--sizes 5,20,50] [--fresh 5] [--kills 3] [--repeat 3] [--bare 9]
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from boss_sidecar.testing import client_config, free_port, router_config

HERE = Path(__file__).resolve().parent
BOUND = 120.0
"""No wait in here is longer than this."""
HERO_CLASS = "bench_workers_hero.Plain"


# ----------------------------------------------------------------- roles in child processes
def router_role(port: int) -> None:
    """A zenoh router on loopback until stdin closes (this process may import zenoh: it is no host)."""
    import zenoh

    session = zenoh.open(zenoh.Config.from_json5(json.dumps(router_config(port))))
    print("ready", flush=True)
    sys.stdin.read()
    session.close()
    os._exit(0)


def _answer(name: str) -> Any:
    """A RemoteHERO of ``name`` that answered a call; raises while none answers."""
    from heros import RemoteHERO

    remote = RemoteHERO(name)
    remote.ping()
    return remote


def client_role(t0: float, names: list[str]) -> None:
    """Call every HERO until each answered and print the seconds since ``t0``; then, for each line
    ``kill NAME PID`` on stdin, SIGKILL that worker and print the seconds until ``NAME`` answers again."""
    remotes: dict[str, Any] = {}
    deadline = time.monotonic() + BOUND
    while len(remotes) < len(names) and time.monotonic() < deadline:
        for name in names:
            if name in remotes:
                continue
            try:
                remotes[name] = _answer(name)
            except Exception:
                continue
        if len(remotes) < len(names):
            time.sleep(0.02)  # discovery has no event to wait on; 20 ms granularity, the same for both sides
    answered = time.monotonic() - t0
    print(json.dumps({"answered": len(remotes), "seconds": answered}), flush=True)
    for line in sys.stdin:
        _, name, pid = line.split()
        print(json.dumps(_restart(name, int(pid))), flush=True)
    os._exit(0)


def _restart(name: str, pid: int) -> dict[str, Any]:
    """SIGKILL the worker ``pid``; once it is gone, the seconds until HERO ``name`` answers again."""
    pidfd = os.pidfd_open(pid)  # the worker is not our child: its exit is seen through a pidfd
    started = time.monotonic()
    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    select.select([pidfd], [], [], BOUND)
    os.close(pidfd)
    while time.monotonic() < started + BOUND:
        try:
            _answer(name)
        except Exception:
            time.sleep(0.02)  # as above: the same granularity as the start-up figure
            continue
        return {"restarted": True, "seconds": time.monotonic() - started}
    return {"restarted": False, "seconds": BOUND}


# ----------------------------------------------------------------- measuring
@dataclass
class Result:
    system: str
    count: int
    answered: int = 0
    answer_seconds: float = float("nan")
    uss: list[float] = field(default_factory=list)
    pss: list[float] = field(default_factory=list)
    total_pss: float = float("nan")
    restarts: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds (user + system) each role had used when every HERO answered: main, template, workers."""


def _child(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def _quiet(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A system under test: no input, its output discarded."""
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )


def _line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"child {process.args!r} ended ({process.poll()}) without answering")
    return line


def _environment(port: int) -> dict[str, str]:
    env = dict(os.environ)
    env["HEROS_ZENOH_CONFIG"] = json.dumps(client_config(port))
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), *sys.path])
    return env


def _documents(names: list[str], directory: Path) -> Path:
    rows = [{"doc": {"_id": name, "classname": HERO_CLASS, "arguments": {"value": i}}} for i, name in enumerate(names)]
    path = directory / f"docs-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps({"rows": rows}))
    return path


def _memory(processes: Iterable[psutil.Process]) -> list[tuple[float, float]]:
    """(USS, PSS) in MB of each process that still runs."""
    found = []
    for process in processes:
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue
        found.append((info.uss / 1e6, info.pss / 1e6))
    return found


def _cpu_seconds(processes: Iterable[psutil.Process]) -> float:
    """CPU time (user + system) of ``processes``. Per process the larger of two lower bounds: psutil's
    figure, in clock ticks of 10 ms (a worker's few milliseconds round to nothing), and the sum of the
    scheduler's nanosecond counts of its live threads (threads that ended, such as numpy's at import
    in BOSS's main process, are missing there)."""
    total = 0.0
    for process in processes:
        ticks = threads = 0.0
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            ticks = times.user + times.system
        with contextlib.suppress(OSError, ValueError, IndexError):
            tasks = Path(f"/proc/{process.pid}/task")
            threads = sum(int((task / "schedstat").read_text().split()[0]) for task in tasks.iterdir()) / 1e9
        total += max(ticks, threads)
    return total


def _cpu_by_role(main_pid: int) -> dict[str, float]:
    """CPU seconds so far of the main process (BOSS's, or the launcher), the template and the workers."""
    template, workers = [], []
    for process in _descendants(main_pid):
        try:
            command = " ".join(process.cmdline())
        except psutil.Error:
            continue
        (template if "boss_sidecar.worker.template" in command else workers).append(process)
    main = _cpu_seconds([psutil.Process(main_pid)])
    return {"main": main, "template": _cpu_seconds(template), "workers": _cpu_seconds(workers)}


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill_tree(process: subprocess.Popen[Any]) -> None:
    for child in _descendants(process.pid):
        try:
            child.kill()
        except psutil.Error:
            continue
    process.kill()
    process.wait(BOUND)


def measure_boss(port: int, count: int, directory: Path) -> Result:
    result = Result("BOSS", count)
    names = [f"bench-boss-{count}-{i}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    documents = _documents(names, directory)
    env = _environment(port)
    boss = shutil.which("boss", path=str(Path(sys.executable).parent)) or "boss"
    t0 = time.monotonic()
    server = _quiet(
        [boss, "-u", documents.as_uri(), "--name", f"bench-boss-{uuid.uuid4().hex[:6]}", "--log", "error"], env
    )
    client = _child("client", repr(t0), *names, env=env)
    try:
        answer = json.loads(_line(client))
        result.answered, result.answer_seconds = answer["answered"], answer["seconds"]
        result.cpu = _cpu_by_role(server.pid)
        workers = _descendants(server.pid)
        readings = _memory(workers)
        result.uss, result.pss = [u for u, _ in readings], [p for _, p in readings]
        result.total_pss = sum(p for _, p in _memory([psutil.Process(server.pid), *workers]))
    finally:
        client.kill()
        client.wait(BOUND)
        _kill_tree(server)  # SIGTERM does not stop boss in time (DESIGN.md); its workers would linger
    return result


FRESH_CONFIG = """[boss]
urls = [{url}]
name = {name}
log_level = "error"
worker_template = false
"""
"""The fresh-interpreter variant: the same documents and name as ``boss-sidecar boss`` gets, in a config."""


def _launcher_command(mode: str, documents: Path, name: str, directory: Path) -> list[str]:
    """``boss-sidecar boss`` with BOSS's flags (template), or the launcher on a ``[boss]`` table (fresh)."""
    program = shutil.which("boss-sidecar", path=str(Path(sys.executable).parent)) or "boss-sidecar"
    if mode == "template":
        return [program, "boss", "-u", documents.as_uri(), "--name", name, "--log", "error"]
    config = directory / f"fresh-{uuid.uuid4().hex[:8]}.toml"
    config.write_text(FRESH_CONFIG.format(url=json.dumps(documents.as_uri()), name=json.dumps(name)))
    return [program, "--log-level", "error", "run", str(config)]


def _health(env: dict[str, str]) -> dict[str, Any]:
    program = shutil.which("boss-sidecar", path=str(Path(sys.executable).parent)) or "boss-sidecar"
    done = subprocess.run(
        [program, "health", "--json"], env=env, capture_output=True, text=True, timeout=BOUND, check=False
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def measure_sidecars(port: int, count: int, mode: str, kills: int, directory: Path) -> Result:
    result = Result(f"boss-sidecar ({mode})", count)
    names = [f"bench-sidecar-{mode}-{count}-{i}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    documents = _documents(names, directory)
    env = _environment(port)
    env["BOSS_SIDECAR_SOCKET"] = str(directory / f"control-{uuid.uuid4().hex[:8]}.sock")
    command = _launcher_command(mode, documents, f"bench-sidecar-{uuid.uuid4().hex[:6]}", directory)
    t0 = time.monotonic()
    launcher = _quiet(command, env)
    client = _child("client", repr(t0), *names, env=env)
    assert client.stdin is not None
    try:
        answer = json.loads(_line(client))
        result.answered, result.answer_seconds = answer["answered"], answer["seconds"]
        result.cpu = _cpu_by_role(launcher.pid)
        pids = {entry["name"]: entry["pid"] for entry in _health(env)["sidecars"]}
        workers = [psutil.Process(pids[name]) for name in names if pids.get(name)]
        readings = _memory(workers)
        result.uss, result.pss = [u for u, _ in readings], [p for _, p in readings]
        everything = [psutil.Process(launcher.pid), *_descendants(launcher.pid)]
        result.total_pss = sum(p for _, p in _memory(everything))
        for name in names[: min(kills, count)]:
            client.stdin.write(f"kill {name} {pids[name]}\n")
            client.stdin.flush()
            restart = json.loads(_line(client))
            if restart["restarted"]:
                result.restarts.append(restart["seconds"])
        launcher.terminate()
        launcher.wait(BOUND)
    finally:
        client.kill()
        client.wait(BOUND)
        if launcher.poll() is None:
            _kill_tree(launcher)
    return result


# ----------------------------------------------------------------- report
def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def report(results: list[Result]) -> None:
    print(
        f"{'system':<28}{'N':>4}{'answered':>9}{'all answer s':>14}"
        f"{'USS/worker MB':>15}{'PSS/worker MB':>15}{'total PSS MB':>14}{'restart s':>11}"
        f"{'CPU s main/template/workers':>30}"
    )
    for r in results:
        restart = f"{statistics.median(r.restarts):.3f}" if r.restarts else "-"
        cpu = "/".join(f"{r.cpu.get(role, float('nan')):.2f}" for role in ("main", "template", "workers"))
        print(
            f"{r.system:<28}{r.count:>4}{r.answered:>9}{r.answer_seconds:>14.2f}"
            f"{_mean(r.uss):>15.1f}{_mean(r.pss):>15.1f}{r.total_pss:>14.0f}{restart:>11}{cpu:>30}"
        )
    print()
    by = {(r.system, r.count): r for r in results}
    for count in sorted({r.count for r in results}):
        boss, forked = by.get(("BOSS", count)), by.get(("boss-sidecar (template)", count))
        if boss is None or forked is None:
            continue
        pss = _mean(forked.pss) / _mean(boss.pss)
        answer = forked.answer_seconds / boss.answer_seconds
        total = forked.total_pss / boss.total_pss
        print(f"N={count}: ratio PSS per worker sidecar/BOSS: {pss:.2f} (goal <= 1.2)")
        print(f"N={count}: ratio total PSS sidecar/BOSS: {total:.2f}")
        print(f"N={count}: ratio time until every HERO answers sidecar/BOSS: {answer:.2f} (goal <= 1)")
        if boss.cpu and forked.cpu:
            cpu = sum(forked.cpu.values()) / sum(boss.cpu.values())
            print(f"N={count}: ratio CPU seconds used until every HERO answers sidecar/BOSS: {cpu:.2f}")
        fresh = by.get(("boss-sidecar (fresh)", count))
        if fresh is not None and fresh.restarts and forked.restarts:
            ratio = statistics.median(forked.restarts) / statistics.median(fresh.restarts)
            print(f"N={count}: ratio restart after kill -9 template/fresh: {ratio:.2f} (goal <= 1)")
            print(f"N={count}: ratio PSS per worker fresh/template: {_mean(fresh.pss) / _mean(forked.pss):.2f}")


def merge(runs: list[Result]) -> Result:
    """One system's repeats as one result: the median answer time and memory, every restart."""
    merged = Result(runs[0].system, runs[0].count)
    merged.answered = min(run.answered for run in runs)
    merged.answer_seconds = statistics.median(run.answer_seconds for run in runs)
    middle = sorted(runs, key=lambda run: _mean(run.pss))[len(runs) // 2]
    merged.uss, merged.pss, merged.total_pss = middle.uss, middle.pss, middle.total_pss
    merged.restarts = [seconds for run in runs for seconds in run.restarts]
    merged.cpu = {role: statistics.median(run.cpu.get(role, 0.0) for run in runs) for role in runs[0].cpu}
    return merged


def compile_bytecode() -> None:
    """Both sides start from bytecode, as pip installs them: heros-boss came with its ``.pyc`` files, while
    an editable boss-sidecar under ``PYTHONDONTWRITEBYTECODE`` would compile its modules in every process."""
    import boss_sidecar

    for directory in boss_sidecar.__path__:
        compileall.compile_dir(directory, quiet=1)
    compileall.compile_file(HERE / "bench_workers_hero.py", quiet=1)


def measure_size(count: int, fresh: bool, kills: int, repeat: int, directory: Path) -> list[Result]:
    """Every system at one size, ``repeat`` times, their order rotated each time (load hits all alike)."""
    port = free_port()
    router = _child("router", str(port))
    systems = ["boss", "template", *(["fresh"] if fresh else [])]
    runs: dict[str, list[Result]] = {system: [] for system in systems}
    try:
        _line(router)
        for round_number in range(repeat):
            shift = round_number % len(systems)
            for system in systems[shift:] + systems[:shift]:
                if system == "boss":
                    runs[system].append(measure_boss(port, count, directory))
                else:
                    runs[system].append(measure_sidecars(port, count, system, kills, directory))
    finally:
        _kill_tree(router)
    return [merge(results) for results in runs.values()]


_READY = "from boss_sidecar.template import _shared\nwith _shared.lock:\n    _shared.template()\n"
BARE_STARTS = {
    "BOSS's main interpreter (what `boss` imports)": "import boss.starter\n",
    "the template's imports in one interpreter": (
        "import boss_sidecar.worker.template, heros, boss.configuration, boss.worker, boss_sidecar.worker.heroes\n"
    ),
    "the launcher's imports in one interpreter": "import boss_sidecar.cli, boss_sidecar.launcher\n",
    "launcher imports, then starts the template": "import boss_sidecar.launcher\n" + _READY,
    "launcher starts the template, imports meanwhile": (
        "from boss_sidecar import template\ntemplate.start()\nimport boss_sidecar.launcher\n" + _READY
    ),
}
"""Bare start-up costs: until the process that forks (BOSS's main, our template) is ready."""


def measure_bare(rounds: int) -> None:
    """Each start in a fresh interpreter, the starts alternated ``rounds`` times; medians of the wall time
    and, for the starts of one interpreter alone, of its CPU time (user + system; numpy's threads make
    it exceed the wall time). On two cores, the CPU time of everything that starts at once is what counts."""
    seconds: dict[str, list[float]] = {name: [] for name in BARE_STARTS}
    cpu: dict[str, list[float]] = {name: [] for name in BARE_STARTS}
    for _ in range(rounds):
        for name, code in BARE_STARTS.items():
            started, before = time.monotonic(), os.times()
            subprocess.run(
                [sys.executable, "-c", code + "import os\nos._exit(0)\n"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=BOUND,
            )
            seconds[name].append(time.monotonic() - started)
            after = os.times()
            user, system = after.children_user - before.children_user, after.children_system - before.children_system
            cpu[name].append(user + system)
    boss = statistics.median(next(iter(seconds.values())))
    for name, values in seconds.items():
        median = statistics.median(values)
        alone = _READY not in BARE_STARTS[name]  # a template it started is not its child to account
        used = f"  CPU {statistics.median(cpu[name]):.3f} s" if alone else ""
        print(f"bare start: {name:<54} {median:.3f} s  ({median / boss:.2f}x BOSS's){used}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 workers, 1 kill, once, 1 bare round: a smoke run")
    parser.add_argument("--sizes", default="5,20,50")
    parser.add_argument("--fresh", default="5", help="sizes also measured with fresh interpreters")
    parser.add_argument("--kills", type=int, default=3, help="restarts measured per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per system and size; medians are reported")
    parser.add_argument("--bare", type=int, default=0, help="also time bare interpreter starts, this many rounds")
    args = parser.parse_args()
    sizes = [2] if args.quick else [int(size) for size in args.sizes.split(",")]
    fresh = {2} if args.quick else {int(size) for size in args.fresh.split(",") if size}
    kills = 1 if args.quick else args.kills
    repeat = 1 if args.quick else args.repeat
    compile_bytecode()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for count in sizes:
            results += measure_size(count, count in fresh, kills, repeat, Path(scratch))
    report(results)
    bare = 1 if args.quick else args.bare
    if bare:
        print()
        measure_bare(bare)


if __name__ == "__main__":
    if sys.argv[1:2] == ["router"]:
        router_role(int(sys.argv[2]))
    elif sys.argv[1:2] == ["client"]:
        client_role(float(sys.argv[2]), sys.argv[3:])
    else:
        main()
