"""Seeded stress of the reading role: callers (threads and asyncio tasks), events both ways, slow served calls,
calls back into the caller and a channel closed at a random moment, interleaved by a seeded plan. Every call
must end (with its own result or a SidecarError), and no two threads may ever read one channel at once: every
read is made by the thread the role names."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import Pipe
from typing import Any

import pytest

from boss_sidecar._framing import _FrameReader
from boss_sidecar._role import ReadingRole
from boss_sidecar.errors import SidecarError
from boss_sidecar.rpc import Endpoint

WAIT = 30.0  # the bound on every wait here; a passing run takes a small fraction of it
SEEDS = range(12)
ACTIONS = 80


class _Work:
    """What both ends serve."""

    def __init__(self) -> None:
        self.peer: Endpoint | None = None
        self.events = 0

    def echo(self, value: Any) -> Any:
        return value

    def slow(self, seconds: float, value: Any) -> Any:
        time.sleep(seconds)  # the workload: a served call that takes a while, not a synchronisation
        return value

    def ask_back(self, value: Any) -> Any:
        assert self.peer is not None
        return self.peer.call("echo", value, timeout=WAIT)

    def note(self, _value: Any) -> None:
        self.events += 1


class _ReadWatch:
    """Wraps every read of a channel: counts reads in progress per channel and checks the reader holds the role."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.roles: dict[int, ReadingRole] = {}
        self.problems: list[str] = []
        self._lock = threading.Lock()
        self._active: dict[int, int] = {}
        original = _FrameReader.batch
        watch = self

        def batch(frames: _FrameReader) -> Any:
            key = id(frames)
            with watch._lock:
                watch._active[key] = watch._active.get(key, 0) + 1
                if watch._active[key] > 1:
                    watch.problems.append(f"two threads read one channel ({threading.current_thread().name})")
            role = watch.roles.get(key)
            if role is not None and role.thread is not threading.current_thread():
                watch.problems.append(f"{threading.current_thread().name} read while the role was {role.state}")
            try:
                return original(frames)
            finally:
                with watch._lock:
                    watch._active[key] -= 1

        monkeypatch.setattr(_FrameReader, "batch", batch)

    def add(self, endpoint: Endpoint) -> None:
        frames = endpoint._reading._frames
        assert frames is not None
        self.roles[id(frames)] = endpoint._role


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running on its own thread, for the async callers."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running
    running.call_soon_threadsafe(running.stop)
    thread.join(WAIT)
    running.close()


def _plan(
    rng: random.Random, host: Endpoint, worker: Endpoint, loop: asyncio.AbstractEventLoop
) -> list[Callable[[], Any]]:
    """The seeded actions: each returns what it checks, or raises."""

    def sync_call(value: int) -> Callable[[], Any]:
        return lambda: host.call("echo", value, timeout=WAIT) == value

    def slow_call(value: int) -> Callable[[], Any]:
        seconds = rng.choice([0.0005, 0.002, 0.01])
        return lambda: host.call("slow", seconds, value, timeout=WAIT) == value

    def call_back(value: int) -> Callable[[], Any]:
        return lambda: host.call("ask_back", value, timeout=WAIT) == value

    def async_call(value: int) -> Callable[[], Any]:
        def run() -> bool:
            future = asyncio.run_coroutine_threadsafe(host.acall("echo", value, timeout=WAIT), loop)
            return bool(future.result(WAIT) == value)

        return run

    def sent(endpoint: Endpoint, value: int) -> bool:
        endpoint.notify("note", value)
        return True

    def event_to_host(value: int) -> Callable[[], Any]:
        return lambda: sent(worker, value)

    def event_to_worker(value: int) -> Callable[[], Any]:
        return lambda: sent(host, value)

    def ping(_value: int) -> Callable[[], Any]:
        return lambda: host.ping(timeout=WAIT) >= 0

    kinds = [sync_call, slow_call, call_back, async_call, event_to_host, event_to_worker, ping]
    return [rng.choice(kinds)(index) for index in range(ACTIONS)]


READS = {"as-sidecar": (True, False), "defaults": (None, None), "callers-read-both": (True, True)}


@pytest.mark.parametrize("reads", sorted(READS))
@pytest.mark.parametrize("seed", SEEDS)
def test_seeded_interleaving_ends_every_call_and_nobody_reads_twice(
    monkeypatch: pytest.MonkeyPatch, loop: asyncio.AbstractEventLoop, seed: int, reads: str
) -> None:
    """Four threads work through a seeded plan of calls, events and slow calls, both ways, while one end is
    closed after a seeded number of actions: each action ends, with its own result before the close and its own
    result or a SidecarError after it, and every read was made by the one thread holding the role."""
    rng = random.Random(seed)
    watch = _ReadWatch(monkeypatch)
    host_work, worker_work = _Work(), _Work()
    ours, theirs = Pipe()
    host_reads, worker_reads = READS[reads]  # callers_read of each end: as the sidecar's, defaults, or both True
    worker = Endpoint(theirs, worker_work, name="worker", callers_read=worker_reads)
    host = Endpoint(ours, host_work, name="host", callers_read=host_reads)
    worker_work.peer = worker  # the worker's served ask_back calls back into the host
    for endpoint in (host, worker):
        watch.add(endpoint)
    actions = _plan(rng, host, worker, loop)
    close_after = rng.randrange(ACTIONS // 2, ACTIONS + 1)
    closing = rng.choice([host, worker])
    started = threading.Semaphore(0)
    outcomes: list[Any] = [None] * ACTIONS
    queue = list(enumerate(actions))
    queue_lock = threading.Lock()

    def run() -> None:
        while True:
            with queue_lock:
                if not queue:
                    return
                index, action = queue.pop(0)
            started.release()
            try:
                outcomes[index] = action()
            except SidecarError as exc:
                outcomes[index] = exc
            except BaseException as exc:
                outcomes[index] = ("unexpected", exc)

    threads = [threading.Thread(target=run, name=f"actor-{n}", daemon=True) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        for _ in range(close_after):
            assert started.acquire(timeout=WAIT)
        closing.close()
        for thread in threads:
            thread.join(WAIT)
        assert not any(thread.is_alive() for thread in threads), "an action did not end"
    finally:
        host.close()
        worker.close()
    assert watch.problems == []
    assert all(outcome is True or isinstance(outcome, SidecarError) for outcome in outcomes), [
        outcome for outcome in outcomes if outcome is not True and not isinstance(outcome, SidecarError)
    ]
