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
from peers.fault_support import RestartWatch, worker_gone, workers_of

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
