"""Round-trip latency and pipelined throughput of Endpoint against a raw multiprocessing pipe.

One run measures everything against spawned child processes (fresh interpreters, each channel
passed as an inherited file descriptor): a raw child that echoes what it receives, and a child
that serves a no-op method through an Endpoint. Both stay up for the whole run and the kinds
are measured in turns, round after round, so a machine that speeds up or slows down mid-run
(a virtual machine's CPUs do) affects each kind alike.

- round trip: one request at a time, p50 and p99 over all rounds: raw ``Connection.send`` and
  ``recv`` of the very dict an Endpoint call sends, ``Endpoint.call`` and ``Endpoint.acall``, and
  ``Endpoint.call`` to a child whose ``Endpoint(connection, target)`` was built with default arguments,
  as a BOSS user would build it (the calling end too), rather than set up as the worker's;
- pipelined: many requests in flight, calls/s (median over rounds): raw (one thread keeps the
  window full: the best a bare pipe does), Endpoint with that many threads, and with that many
  asyncio tasks; and, on the bare pipe, the simplest client with that many threads (a lock per
  call, one reader thread) and with that many tasks (a future per call, the loop reads): what
  threads or tasks cost by themselves, before any endpoint;
- busy machine: the round trips again (raw and ``Endpoint.call``) while as many processes as there
  are cores but one spin, so the peers and the spinners want more cores than there are: what
  ``busy_wait`` costs where polling holds the core the peer needs (it backs off after misses);
- ratios endpoint/raw, and endpoint/simplest client with the same threads or tasks (throughput
  ratios are medians of the per-round ratios).

Goals: round trip p50 ratio <= 1.5; throughput ratio >= 0.5.

Usage: python scripts/bench_rpc.py [--rounds N] [--calls N] [--pipelined N] [--in-flight N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from boss_sidecar.protocol import Call
from boss_sidecar.rpc import Endpoint

_BOUND = 30.0  # no wait here is longer


class _Served:
    """What the endpoint child serves."""

    def noop(self) -> None:
        """Do nothing: the call measures the channel alone."""


def _child(mode: str, fd: int) -> None:
    """Child side: echo raw messages, or serve ``_Served`` through an Endpoint (set up as the worker's, or
    built with default arguments as a BOSS user would), until the parent hangs up."""
    connection = Connection(fd)
    if mode == "raw":
        with contextlib.suppress(EOFError, OSError):
            while True:
                connection.send(connection.recv())
        return
    if mode == "defaults":
        endpoint = Endpoint(connection, _Served())
    else:
        endpoint = Endpoint(connection, _Served(), name="bench-child", max_workers=64, callers_read=False)
    endpoint.closed.wait(600)


@contextlib.contextmanager
def _spawned(mode: str) -> Iterator[Connection]:
    """A child process in ``mode`` and our end of its channel; the child is reaped on exit."""
    ours, theirs = multiprocessing.Pipe()
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        stdout=subprocess.DEVNULL,  # the child's log lines would mix with the figures
    )
    theirs.close()
    try:
        yield ours
    finally:
        ours.close()
        try:
            child.wait(_BOUND)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(_BOUND)


def _raw_message() -> dict[str, Any]:
    """The very dict an Endpoint sends for ``call("noop")``."""
    return Call(id=1, method="noop", args=(), kwargs={}, timeout=60.0).to_wire()


def _timed(count: int, one: Callable[[], Any]) -> list[float]:
    samples = []
    clock = time.perf_counter
    for _ in range(count):
        start = clock()
        one()
        samples.append(clock() - start)
    return samples


def _timed_async(loop: asyncio.AbstractEventLoop, count: int, endpoint: Endpoint) -> list[float]:
    async def run() -> list[float]:
        samples = []
        clock = time.perf_counter
        for _ in range(count):
            start = clock()
            await endpoint.acall("noop")
            samples.append(clock() - start)
        return samples

    return loop.run_until_complete(run())


def _raw_rate(connection: Connection, calls: int, in_flight: int) -> float:
    """One thread keeps ``in_flight`` messages outstanding: the best a bare pipe does."""
    message = _raw_message()
    window = min(in_flight, calls)
    start = time.perf_counter()
    for _ in range(window):
        connection.send(message)
    for sent in range(window, calls + window):
        connection.recv()
        if sent < calls:
            connection.send(message)
    return calls / (time.perf_counter() - start)


def _raw_thread_rate(connection: Connection, calls: int, in_flight: int) -> float:
    """The simplest client with ``in_flight`` threads on the bare pipe: a lock per call, one reader
    thread. It does no more than any client with a thread per call must, so it shows what the
    threads themselves cost."""
    waiting: dict[int, threading.Lock] = {}
    send_lock = threading.Lock()
    message = _raw_message()
    ids = itertools.count()

    def reader() -> None:  # no poll per reply to bound it: the callers' waits are bounded, and it is a daemon
        for _ in range(calls):
            waiting.pop(connection.recv()["id"]).release()

    def call() -> None:
        answered = threading.Lock()
        answered.acquire()
        request = dict(message, id=next(ids))
        waiting[request["id"]] = answered
        with send_lock:
            connection.send(request)
        if not answered.acquire(timeout=_BOUND):
            raise TimeoutError(f"no reply within {_BOUND:g}s")

    return _rate_of_threads(calls, _shares(calls, in_flight), call, reader)


def _raw_task_rate(loop: asyncio.AbstractEventLoop, connection: Connection, calls: int, in_flight: int) -> float:
    """The simplest client with ``in_flight`` asyncio tasks on the bare pipe: a future per call, the
    loop itself reading the pipe. It shows what asyncio itself costs per call."""
    waiting: dict[int, asyncio.Future[Any]] = {}
    message = _raw_message()
    ids = itertools.count()

    def readable() -> None:
        while connection.poll():
            reply = connection.recv()
            waiting.pop(reply["id"]).set_result(reply)

    async def worker(count: int) -> None:
        for _ in range(count):
            request = dict(message, id=next(ids))
            waiting[request["id"]] = answered = loop.create_future()
            connection.send(request)
            await answered

    async def run() -> float:
        loop.add_reader(connection.fileno(), readable)
        try:
            start = time.perf_counter()
            workers = asyncio.gather(*(worker(count) for count in _shares(calls, in_flight)))
            await asyncio.wait_for(workers, _BOUND)  # one bound for the lot: a timer per call would cost each
            return calls / (time.perf_counter() - start)
        finally:
            loop.remove_reader(connection.fileno())

    return loop.run_until_complete(run())


def _shares(calls: int, parts: int) -> list[int]:
    share, extra = divmod(calls, parts)
    return [share + (1 if index < extra else 0) for index in range(parts)]


def _thread_rate(endpoint: Endpoint, calls: int, in_flight: int) -> float:
    return _rate_of_threads(calls, _shares(calls, in_flight), lambda: endpoint.call("noop"))


def _rate_of_threads(
    calls: int, counts: list[int], call: Callable[[], None], reader: Callable[[], None] | None = None
) -> float:
    """Calls/s of one thread per item of ``counts``, each making that many ``call()``s, timed from when
    all are ready to when all are done; ``reader``, if given, runs in a thread of its own alongside.
    A thread that fails or outlasts the bound fails the measurement."""
    ready = threading.Barrier(len(counts) + 1, timeout=_BOUND)
    failures: list[BaseException] = []

    def run(count: int) -> None:
        try:
            ready.wait()
            for _ in range(count):
                call()
        except BaseException as exc:
            failures.append(exc)

    def read() -> None:
        try:
            if reader is not None:
                reader()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(count,), daemon=True) for count in counts]
    helper = threading.Thread(target=read, daemon=True)
    for thread in [helper, *threads]:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join(_BOUND)
    rate = calls / (time.perf_counter() - start)
    helper.join(_BOUND)
    if failures:
        raise RuntimeError(f"{len(failures)} benchmark thread(s) failed") from failures[0]
    if any(thread.is_alive() for thread in [helper, *threads]):
        raise TimeoutError(f"benchmark threads still running after {_BOUND:g}s")
    return rate


def _task_rate(loop: asyncio.AbstractEventLoop, endpoint: Endpoint, calls: int, in_flight: int) -> float:
    async def worker(count: int) -> None:
        for _ in range(count):
            await endpoint.acall("noop")

    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(worker(count) for count in _shares(calls, in_flight)))
        return calls / (time.perf_counter() - start)

    return loop.run_until_complete(run())


@contextlib.contextmanager
def _busy_machine() -> Iterator[int]:
    """Every core but one kept busy by a spinning process (at least one); yields how many."""
    count = max(1, (os.cpu_count() or 2) - 1)
    program = "print('spinning', flush=True)\nwhile True: pass"
    spinners = [
        subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True) for _ in range(count)
    ]
    try:
        for spinner in spinners:
            assert spinner.stdout is not None
            spinner.stdout.readline()  # it spins from now on (or ended: EOF)
        yield count
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait(_BOUND)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in microseconds."""
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49] * 1e6, cuts[98] * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="rounds of turns (default 10)")
    parser.add_argument("--calls", type=int, default=500, help="round trips per kind per round (default 500)")
    parser.add_argument("--pipelined", type=int, default=5000, help="calls per kind per round (default 5000)")
    parser.add_argument("--in-flight", type=int, default=64, help="threads or tasks in flight at once (default 64)")
    parser.add_argument("--quick", action="store_true", help="tiny counts, for a smoke test")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FD"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        _child(options.child[0], int(options.child[1]))
        return
    if options.quick:
        options.rounds, options.calls, options.pipelined, options.in_flight = 2, 50, 200, 8

    latency: dict[str, list[float]] = {
        "raw": [],
        "call": [],
        "acall": [],
        "defaults": [],
        "busy raw": [],
        "busy call": [],
    }
    rates: dict[str, list[float]] = {"raw": [], "raw threads": [], "raw tasks": [], "threads": [], "tasks": []}
    loop = asyncio.new_event_loop()
    with _spawned("raw") as raw, _spawned("endpoint") as connection, _spawned("defaults") as plain_connection:
        endpoint = Endpoint(connection, name="bench", max_workers=max(32, options.in_flight))
        plain = Endpoint(plain_connection)  # both ends built with default arguments
        try:
            endpoint.wait_peer(_BOUND)
            plain.wait_peer(_BOUND)
            message = _raw_message()

            def raw_round_trip() -> None:
                raw.send(message)
                raw.recv()

            for _ in range(options.rounds):
                latency["raw"] += _timed(options.calls, raw_round_trip)
                latency["call"] += _timed(options.calls, lambda: endpoint.call("noop"))
                latency["acall"] += _timed_async(loop, options.calls, endpoint)
                latency["defaults"] += _timed(options.calls, lambda: plain.call("noop"))
            with _busy_machine() as spinners:
                for _ in range(options.rounds):
                    latency["busy raw"] += _timed(options.calls, raw_round_trip)
                    latency["busy call"] += _timed(options.calls, lambda: endpoint.call("noop"))
            for _ in range(options.rounds):
                rates["raw"].append(_raw_rate(raw, options.pipelined, options.in_flight))
                rates["raw threads"].append(_raw_thread_rate(raw, options.pipelined, options.in_flight))
                rates["raw tasks"].append(_raw_task_rate(loop, raw, options.pipelined, options.in_flight))
                rates["threads"].append(_thread_rate(endpoint, options.pipelined, options.in_flight))
                rates["tasks"].append(_task_rate(loop, endpoint, options.pipelined, options.in_flight))
        finally:
            endpoint.close()
            plain.close()
            loop.close()
    _report(options, latency, rates, spinners)


def _report(
    options: argparse.Namespace, latency: dict[str, list[float]], rates: dict[str, list[float]], spinners: int
) -> None:
    """Print the figures and the ratios."""
    figures = {kind: _percentiles(samples) for kind, samples in latency.items()}
    total = options.rounds * options.calls
    print(f"round trip, {total} calls each, {options.rounds} rounds (microseconds)   p50       p99")
    for kind, label in (
        ("raw", "raw pipe"),
        ("call", "Endpoint.call"),
        ("acall", "Endpoint.acall"),
        ("defaults", "Endpoint.call, both ends with default arguments"),
    ):
        p50, p99 = figures[kind]
        print(f"  {label:<52}{p50:>8.1f}  {p99:>8.1f}")
    print(f"round trip on a busy machine (cores: {os.cpu_count()}, spinning processes besides: {spinners})")
    for kind, label in (("busy raw", "raw pipe"), ("busy call", "Endpoint.call")):
        p50, p99 = figures[kind]
        print(f"  {label:<52}{p50:>8.1f}  {p99:>8.1f}")
    print(
        f"pipelined, {options.pipelined} calls x {options.rounds} rounds, {options.in_flight} in flight"
        " (calls/s, median)"
    )
    for kind, label in (
        ("raw", "raw pipe (one thread, window full)"),
        ("raw threads", f"raw pipe, simplest client, {options.in_flight} threads"),
        ("raw tasks", f"raw pipe, simplest client, {options.in_flight} tasks"),
        ("threads", f"Endpoint.call, {options.in_flight} threads"),
        ("tasks", f"Endpoint.acall, {options.in_flight} tasks"),
    ):
        print(f"  {label:<52}{statistics.median(rates[kind]):>10.0f}")

    def rate_ratio(kind: str, against: str = "raw") -> float:
        return statistics.median(mine / raw for mine, raw in zip(rates[kind], rates[against], strict=True))

    print("ratios endpoint/raw (goals: round trip p50 <= 1.5, throughput >= 0.5)")
    print(f"  ratio round trip p50 call:  {figures['call'][0] / figures['raw'][0]:.2f}")
    print(f"  ratio round trip p50 acall: {figures['acall'][0] / figures['raw'][0]:.2f}")
    print(f"  ratio throughput threads:   {rate_ratio('threads'):.2f}")
    print(f"  ratio throughput tasks:     {rate_ratio('tasks'):.2f}")
    print(f"  ratio busy machine p50 call: {figures['busy call'][0] / figures['busy raw'][0]:.2f}  (no goal)")
    print(f"  ratio round trip p50 defaults: {figures['defaults'][0] / figures['raw'][0]:.2f}  (no goal)")
    print("ratios endpoint/simplest client on the raw pipe, same threads or tasks (no goal)")
    print(f"  ratio threads/simplest:      {rate_ratio('threads', 'raw threads'):.2f}")
    print(f"  ratio tasks/simplest:        {rate_ratio('tasks', 'raw tasks'):.2f}")


if __name__ == "__main__":
    main()
