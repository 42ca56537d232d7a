"""The chaos run shared by ``tests/test_faults_chaos.py`` (CI-sized) and ``scripts/chaos.py`` (long).

Several threads and asyncio tasks call a hosted echo object, each call with a token of its own,
while a subscription receives a stream from a second, stable sidecar; a killer SIGKILLs the worker
at random moments (sometimes while a new worker is still starting). The report says how every
call ended, whether the stream came back after each restart, and whether any worker outlived it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from boss_sidecar import AsyncSidecar, Sample, Sidecar, SidecarError, SidecarState
from boss_sidecar.testing import free_port, peer_config
from peers.fault_support import BOUND, CtrlCAtSigterm, RestartWatch, worker_gone, workers_of

ECHO = "peers.fault_objects:FaultEcho"
STREAM = "fault/chaos/stream"
WORKER_NAME = "fault-chaos"


@dataclass(frozen=True)
class ChaosSettings:
    kills: int = 8
    """Rounds: each SIGKILLs the worker at a random moment (sometimes its replacement too)."""
    threads: int = 3
    tasks: int = 3
    max_gap: float = 0.3
    """A kill comes a random 0 to ``max_gap`` seconds after the previous worker became ready."""
    starting_kill_ratio: float = 0.25
    """Share of rounds that also kill the replacement worker while it is still starting."""
    call_timeout: float = 10.0
    bound: float = 30.0
    """No single wait (a restart, the stream coming back, a caller ending) is longer than this."""
    seed: int | None = None


@dataclass
class ChaosReport:
    rounds: int = 0
    """Rounds of kill, restart and stream check done (``settings.kills`` when all went well)."""
    sigkills: int = 0
    starting_kills: int = 0
    """Workers killed while still starting (replaying the ledger)."""
    calls_ok: int = 0
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    """SidecarError type name -> how many calls ended with it."""
    wrong_results: list[str] = field(default_factory=list)
    """Calls that returned something other than their own token (must stay empty)."""
    foreign_errors: list[str] = field(default_factory=list)
    """Calls that ended with an exception that is not a SidecarError (must stay empty)."""
    hung_callers: list[str] = field(default_factory=list)
    """Callers still inside a call when the run ended (must stay empty)."""
    final_calls_ok: int = 0
    """Callers whose call after the last restart succeeded (must equal the number of callers)."""
    stream_back: int = 0
    """Restarts after which the subscription delivered a sample published after the restart."""
    restart_reasons: list[str] = field(default_factory=list)
    worker_pids: set[int] = field(default_factory=set)
    leftover_workers: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def problems(self, settings: ChaosSettings) -> list[str]:
        """Everything that broke the promise; empty when the run was good."""
        found = []
        callers = settings.threads + settings.tasks
        if self.rounds != settings.kills:
            found.append(f"only {self.rounds} of {settings.kills} kill rounds happened")
        if self.wrong_results:
            found.append(f"calls returned another call's result: {self.wrong_results[:3]}")
        if self.foreign_errors:
            found.append(f"calls raised non-SidecarErrors: {self.foreign_errors[:3]}")
        if self.hung_callers:
            found.append(f"callers hung: {self.hung_callers}")
        if self.final_calls_ok != callers:
            found.append(f"only {self.final_calls_ok} of {callers} callers were served after the last restart")
        if self.stream_back != self.rounds:
            found.append(f"the stream came back after {self.stream_back} of {self.rounds} restarts")
        if self.leftover_workers:
            found.append(f"workers left running: {self.leftover_workers}")
        return found


class _Stream:
    """The publisher's counter and what the subscription received, for 'delivers again' checks."""

    def __init__(self) -> None:
        self.published = 0
        self.latest = -1
        self._changed = threading.Condition()

    def on_sample(self, sample: Sample) -> None:
        with self._changed:
            self.latest = max(self.latest, int(sample.payload))
            self._changed.notify_all()

    def wait_beyond(self, mark: int, timeout: float) -> bool:
        """Whether a sample published after ``mark`` arrives within ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.latest > mark, timeout)


def _bounded_poll(check: Callable[[], Any], timeout: float) -> Any:
    """Poll ``check`` briefly (for the pid of a worker that is being started); None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.001)
    return None


class _Run:
    def __init__(self, settings: ChaosSettings) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.report = ChaosReport()
        self.stream = _Stream()
        self.restarts = RestartWatch()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.in_call: dict[str, str] = {}
        self.tokens = itertools.count()

    # ----------------------------------------------------------------- one call and its outcome
    def token(self, caller: str) -> str:
        return f"{caller}:{next(self.tokens)}:{uuid.uuid4().hex}"

    def outcome(self, caller: str, token: str, result: Any, error: BaseException | None) -> bool:
        with self.lock:
            self.in_call.pop(caller, None)
            if error is None and result == token:
                self.report.calls_ok += 1
                return True
            if error is None:
                self.report.wrong_results.append(f"{caller} sent {token!r}, got {result!r}")
            elif isinstance(error, SidecarError):
                self.report.failures[type(error).__name__] += 1
            else:
                self.report.foreign_errors.append(f"{caller}: {type(error).__name__}: {error}")
            return False

    def started(self, caller: str, token: str) -> None:
        with self.lock:
            self.in_call[caller] = token

    # ----------------------------------------------------------------- callers
    def ended(self, caller: str, token: str, result: Any, error: BaseException | None, last: bool) -> None:
        if self.outcome(caller, token, result, error) and last:
            with self.lock:
                self.report.final_calls_ok += 1

    def thread_caller(self, name: str, echo: Any) -> None:
        """Call until the killer is done, then once more (that call must succeed)."""
        last = False
        while not last:
            last = self.done.is_set()
            token = self.token(name)
            self.started(name, token)
            try:
                self.ended(name, token, echo.echo(token), None, last)
            except Exception as exc:
                self.ended(name, token, None, exc, last)

    async def task_caller(self, name: str, echo: Any) -> None:
        """thread_caller's loop, awaiting the async proxy."""
        last = False
        while not last:
            last = self.done.is_set()
            token = self.token(name)
            self.started(name, token)
            try:
                self.ended(name, token, await echo.echo(token), None, last)
            except Exception as exc:
                self.ended(name, token, None, exc, last)

    def publisher(self, sidecar: Sidecar) -> None:
        """A steady stream (paced, not synchronised: each put is followed by a flush round trip)."""
        while not self.done.wait(0.005):
            with contextlib.suppress(SidecarError):
                sidecar.put(STREAM, str(self.stream.published + 1))
                sidecar.flush(timeout=self.settings.bound)
                self.stream.published += 1

    # ----------------------------------------------------------------- the killer
    def killer(self, sidecar: AsyncSidecar) -> None:
        """Each round: kill at a random moment (sometimes the next worker too, while it starts),
        then wait for the restart and for a sample published after it."""
        settings = self.settings
        for number in range(settings.kills):
            before = self.restarts.count
            self.done.wait(self.rng.uniform(0, settings.max_gap))  # a random moment, not a hand-off
            pid = sidecar.pid
            if pid is None:
                return
            self.kill(pid)
            if number > 0 and self.rng.random() < settings.starting_kill_ratio:
                self.kill_next_while_starting(sidecar, pid)
            self.report.rounds += 1
            if not self.restarts.wait_past(before, settings.bound):
                return
            if self.stream.wait_beyond(self.stream.published, settings.bound):
                self.report.stream_back += 1
            self.report.worker_pids.add(sidecar.pid or 0)

    def kill(self, pid: int) -> None:
        self.report.worker_pids.add(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.report.sigkills += 1

    def kill_next_while_starting(self, sidecar: AsyncSidecar, old: int) -> None:
        """Kill the replacement of ``old`` as soon as it exists, while it is still starting."""
        fresh = _bounded_poll(
            lambda: sidecar.state == SidecarState.STARTING and sidecar.pid not in (None, old) and sidecar.pid,
            self.settings.bound,
        )
        if fresh is not None:
            self.kill(fresh)
            self.report.starting_kills += 1


async def run_chaos(settings: ChaosSettings) -> ChaosReport:
    """Run the chaos; every wait inside is bounded by ``settings.bound``."""
    run = _Run(settings)
    started = time.monotonic()
    port = free_port()
    publisher = Sidecar(f"{WORKER_NAME}-pub", peer_config(port))
    sidecar = AsyncSidecar(
        WORKER_NAME,
        peer_config(connect_ports=(port,)),
        max_restarts=settings.kills * 4 + 10,
        restart_window=3600.0,
        backoff_initial=0.0,
        call_timeout=settings.call_timeout,
        heartbeat_interval=0.5,
    )
    sidecar.on_restart(run.restarts)
    publisher.start()
    threads: list[threading.Thread] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await sidecar.start()
        run.report.worker_pids.add(sidecar.pid or 0)
        await sidecar.subscribe(STREAM, run.stream.on_sample)
        async_echo = await sidecar.host(ECHO)
        # The threads drive the same sidecar through its sync core (AsyncSidecar wraps one).
        sync_echo = await asyncio.to_thread(sidecar._sync.host, ECHO)
        feeder = threading.Thread(target=run.publisher, args=(publisher,), daemon=True)
        feeder.start()
        if not await asyncio.to_thread(run.stream.wait_beyond, 0, settings.bound):
            raise AssertionError("the stream never started")
        threads = [
            threading.Thread(target=run.thread_caller, args=(f"thread{i}", sync_echo), name=f"thread{i}", daemon=True)
            for i in range(settings.threads)
        ]
        for thread in threads:
            thread.start()
        tasks = [
            asyncio.create_task(run.task_caller(f"task{i}", async_echo), name=f"task{i}") for i in range(settings.tasks)
        ]
        await asyncio.to_thread(run.killer, sidecar)
        run.done.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, settings.call_timeout + settings.bound)
        _, pending = await asyncio.wait(tasks, timeout=settings.call_timeout + settings.bound)
        feeder.join(settings.bound)
        stuck = [thread.name for thread in threads if thread.is_alive()] + [task.get_name() for task in pending]
        with run.lock:
            run.report.hung_callers = sorted(f"{name} in call {run.in_call.get(name)!r}" for name in stuck)
    finally:
        run.done.set()
        for task in tasks:
            task.cancel()
        await sidecar.stop(timeout=10)
        publisher.stop(timeout=10)
    run.report.restart_reasons = list(run.restarts.reasons)
    run.report.worker_pids.discard(0)
    run.report.leftover_workers = sorted(
        {pid for pid in run.report.worker_pids if not worker_gone(pid)}
        | set(workers_of(WORKER_NAME))
        | set(workers_of(f"{WORKER_NAME}-pub"))
    )
    run.report.seconds = time.monotonic() - started
    return run.report


# ----------------------------------------------------------------- lifecycle chaos
LIFECYCLE_NAME = "fault-lifecycle"
LIFECYCLE_ACTIONS = (
    "restart-after-kill",
    "restart-as-channel-breaks",
    "restart-during-restart",
    "stop-after-kill",
    "ctrl-c-in-stop",
)


@dataclass
class LifecycleReport:
    """What ``run_lifecycle_chaos`` saw; ``problems()`` is empty when every promise held."""

    rounds: collections.Counter[str] = field(default_factory=collections.Counter)
    """Action name -> rounds done."""
    most_workers: int = 0
    """The most workers of the sidecar seen alive at one moment (sampled all along; must stay 1)."""
    failed: list[str] = field(default_factory=list)
    """Reasons of FAILED states reached (must stay empty: the policy allows every restart here)."""
    unfinished_stops: int = 0
    """Interrupted stops that a second stop() did not finish (must stay 0)."""
    calls_ok: int = 0
    wrong_calls: list[str] = field(default_factory=list)
    """Calls that got another call's result or an exception that is not a SidecarError."""
    leftover_workers: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def problems(self) -> list[str]:
        found = []
        if self.most_workers > 1:
            found.append(f"{self.most_workers} workers alive at once")
        if self.failed:
            found.append(f"went FAILED: {self.failed[:3]}")
        if self.unfinished_stops:
            found.append(f"{self.unfinished_stops} interrupted stops not finished by a second stop()")
        if self.wrong_calls:
            found.append(f"wrong call outcomes: {self.wrong_calls[:3]}")
        if self.leftover_workers:
            found.append(f"workers left running: {self.leftover_workers}")
        return found


def _watch_workers(report: LifecycleReport, done: threading.Event) -> None:
    while not done.wait(0.005):
        report.most_workers = max(report.most_workers, len(workers_of(LIFECYCLE_NAME)))


class _Echo:
    """The hosted echo the caller uses; stop() ends hosted objects, so each start() hosts a new one.
    ``generation`` changes before a stop: a LookupError from an echo of an earlier generation is expected."""

    def __init__(self) -> None:
        self.generation = 0
        self.echo: Any = None

    def retire(self) -> None:
        self.generation += 1
        self.echo = None

    def host_on(self, sidecar: Sidecar) -> None:
        self.echo = sidecar.host(ECHO)


def _lifecycle_caller(echo: _Echo, report: LifecycleReport, done: threading.Event, lock: threading.Lock) -> None:
    number = 0
    while not done.is_set():
        number += 1
        generation, proxy = echo.generation, echo.echo
        if proxy is None:
            done.wait(0.01)
            continue
        try:
            result = proxy.echo(number)
        except SidecarError:
            done.wait(0.01)
            continue
        except Exception as exc:
            if not (isinstance(exc, LookupError) and generation != echo.generation):
                with lock:
                    report.wrong_calls.append(f"{type(exc).__name__}: {exc}")
            continue
        with lock:
            if result == number:
                report.calls_ok += 1
            else:
                report.wrong_calls.append(f"sent {number}, got {result!r}")


def _restart_quietly(sidecar: Sidecar) -> None:
    """restart(), where a SidecarError is allowed (the policy restarts anyway)."""
    with contextlib.suppress(SidecarError):
        sidecar.restart()


def _kill(sidecar: Sidecar) -> None:
    pid = sidecar.pid
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _lifecycle_round(
    sidecar: Sidecar, backend: CtrlCAtSigterm, echo: _Echo, action: str, report: LifecycleReport
) -> None:
    """One action racing a kill (or a Ctrl-C), then back to RUNNING; every wait bounded."""
    if action == "restart-after-kill":
        _kill(sidecar)
        _restart_quietly(sidecar)
    elif action == "restart-as-channel-breaks":  # the worker lives on a moment while the monitor collects it
        with contextlib.suppress(SidecarError):
            sidecar.host(ECHO).break_channel()
        _restart_quietly(sidecar)
    elif action == "restart-during-restart":
        racer = threading.Thread(target=_restart_quietly, args=(sidecar,), daemon=True)
        racer.start()
        _kill(sidecar)
        _restart_quietly(sidecar)
        racer.join(BOUND)
    elif action == "stop-after-kill":
        echo.retire()
        _kill(sidecar)
        sidecar.stop(timeout=5)
        sidecar.start()
        echo.host_on(sidecar)
    else:
        echo.retire()
        pid = sidecar.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        backend.armed = True
        with contextlib.suppress(KeyboardInterrupt):
            sidecar.stop(timeout=1.0)
        backend.armed = False
        sidecar.stop(timeout=5)
        if sidecar.state != SidecarState.STOPPED:
            report.unfinished_stops += 1
            raise AssertionError(f"an interrupted stop was left {sidecar.state}")
        sidecar.start()
        echo.host_on(sidecar)
    _bounded_poll(lambda: sidecar.state in (SidecarState.RUNNING, SidecarState.FAILED), BOUND)
    if sidecar.state == SidecarState.FAILED:
        report.failed.append(sidecar.health().reason)
        raise AssertionError(f"FAILED: {sidecar.health().reason}")
    report.rounds[action] += 1


def run_lifecycle_chaos(
    rounds: int, seed: int | None = None, actions: tuple[str, ...] = LIFECYCLE_ACTIONS
) -> LifecycleReport:
    """``rounds`` random actions racing kills: restart() right after a kill, two restarts racing a kill,
    stop() right after a kill, Ctrl-C during stop() of a frozen worker; a thread calls throughout and a
    watcher counts live workers. Stops at the first broken promise (the report says which)."""
    rng = random.Random(seed)
    report = LifecycleReport()
    started = time.monotonic()
    backend = CtrlCAtSigterm()
    sidecar = Sidecar(
        LIFECYCLE_NAME,
        peer_config(free_port()),  # a fixed port: a second worker at once could not listen
        backend=backend,
        max_restarts=rounds * 4 + 10,
        restart_window=3600.0,
        backoff_initial=0.0,
        heartbeat_interval=0.5,
    )
    done, lock = threading.Event(), threading.Lock()
    helpers = [
        threading.Thread(target=_watch_workers, args=(report, done), daemon=True),
    ]
    try:
        sidecar.start()
        echo = _Echo()
        echo.host_on(sidecar)
        helpers.append(threading.Thread(target=_lifecycle_caller, args=(echo, report, done, lock), daemon=True))
        for helper in helpers:
            helper.start()
        for _ in range(rounds):
            try:
                _lifecycle_round(sidecar, backend, echo, rng.choice(actions), report)
            except (AssertionError, SidecarError) as exc:
                if not report.failed and not report.unfinished_stops:
                    report.failed.append(f"{type(exc).__name__}: {exc}")
                break
    finally:
        done.set()
        for helper in helpers:
            helper.join(BOUND)
        sidecar.stop(timeout=10)
    report.leftover_workers = workers_of(LIFECYCLE_NAME)
    report.seconds = time.monotonic() - started
    return report
