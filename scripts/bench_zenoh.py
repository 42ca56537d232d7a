"""zenoh through the sidecar against zenoh in-process, and a restart against a cold start.

One run, side by side (each side talks to a peer process of its own, a plain zenoh session):

- put: puts/s a publisher gets into zenoh, the peer subscribing (sidecar: ``put()`` calls until
  ``flush()`` returns; in-process: ``session.put`` calls), 64 B and 64 KiB payloads, congestion
  control "block" so that no put is dropped (with "drop" a put rate is mostly a drop rate);
- delivery: samples/s reaching a subscriber callback (a host callback behind the sidecar, or a
  zenoh callback in-process that reads the payload), the peer publishing as fast as it can with
  congestion control "block", measured from the first to the last callback;
- end to end: samples/s from the first put to the last callback, publisher and subscriber on two
  sessions (two sidecars, or two in-process sessions), congestion control "block";
- restart: kill -9 of the worker to the first served call, against a cold start: ``start()`` to
  the first served call (each with one subscription to declare), the median of ``--repeat``.
- delivery 64 KiB through a bare relay (no goal): a child process whose zenoh callback writes
  each payload to a socket, this process copying it out and calling the callback on its reading
  thread. About the least a design that keeps zenoh in another process and sends samples through
  a socket can do: what that boundary itself costs large samples on this machine.

Each rate is the best of ``--rounds`` rounds, on both sides alike.

The in-process figures come from a subprocess: this host never imports zenoh.
Goals: put and delivery >= 0.5x in-process; restart <= 1.5x cold start.

Usage: python scripts/bench_zenoh.py [--quick] [--rounds N] [--repeat N] [--small N] [--large N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from boss_sidecar._framing import _after, _ChannelEnded, _FrameReader, _header
from boss_sidecar.errors import SidecarCrashed
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import free_port, peer_config

SMALL, LARGE = 64, 64 * 1024
BOUND = 60.0
"""No wait in here is longer than this."""
PUT_KEY, PUT_PROBE_KEY = "bench/put/data", "bench/put/probe"
DELIVER_KEY, E2E_KEY, PROBE_KEY = "bench/deliver", "bench/e2e", "bench/probe"


class Api(Protocol):
    """What a measurement needs of a session: the sidecar's proxy or zenoh itself."""

    def put(self, key: str, payload: bytes, block: bool = False) -> None: ...
    def flush(self) -> None: ...
    def subscribe(self, key: str, callback: Callable[[Any], None]) -> None: ...
    def close(self) -> None: ...


class SidecarApi:
    def __init__(self, config: dict[str, Any], name: str = "bench") -> None:
        self.sidecar = Sidecar(name, config, log_level="warning").start()

    def put(self, key: str, payload: bytes, block: bool = False) -> None:
        self.sidecar.put(key, payload, congestion_control="block" if block else None)

    def flush(self) -> None:
        self.sidecar.flush(timeout=BOUND)

    def subscribe(self, key: str, callback: Callable[[Any], None]) -> None:
        self.sidecar.subscribe(key, callback)

    def close(self) -> None:
        self.sidecar.stop()


class RelayApi:
    """Samples from a bare relay (``--role relay``): the simplest way to keep zenoh in another process.

    The relay's zenoh callbacks write each sample's payload, behind a one-byte subscription tag, to a
    socket; a thread here reads it and calls the callback with the payload's bytes."""

    KEYS = (DELIVER_KEY, PROBE_KEY)

    def __init__(self, config: dict[str, Any]) -> None:
        ours, theirs = socket.socketpair()
        self._socket = ours
        self._callbacks: dict[int, Callable[[Any], None]] = {}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--role", "relay", "--fd", str(theirs.fileno()), "--config", json.dumps(config)],
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        self._reader = threading.Thread(target=self._read, name="relay-reader", daemon=True)
        self._reader.start()

    def put(self, key: str, payload: bytes, block: bool = False) -> None:
        raise NotImplementedError("the relay only delivers")

    def flush(self) -> None:
        """Nothing is ever queued here."""

    def subscribe(self, key: str, callback: Callable[[Any], None]) -> None:
        self._callbacks[self.KEYS.index(key)] = callback

    def _read(self) -> None:
        frames = _FrameReader(self._socket.fileno(), limit=1 << 30)
        try:
            while True:
                for frame in frames.batch():
                    assert isinstance(frame, memoryview)
                    callback = self._callbacks.get(frame[0])
                    if callback is not None:
                        callback(bytes(frame[1:]))
        except (_ChannelEnded, OSError):
            return

    def close(self) -> None:
        self._socket.shutdown(socket.SHUT_RDWR)  # the relay sees the end and exits
        try:
            self.process.wait(BOUND)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(BOUND)
        self._reader.join(BOUND)
        self._socket.close()


def relay_role(fd: int, config: dict[str, Any]) -> None:
    """Subscribe to RelayApi.KEYS; each sample's payload goes to socket ``fd`` as it arrives."""
    import zenoh

    channel = socket.socket(fileno=fd)
    session = zenoh.open(zenoh.Config.from_json5(json.dumps(config)))
    sending = threading.Lock()

    def relay(tag: bytes) -> Callable[[Any], None]:
        def on_sample(sample: Any) -> None:
            payload = sample.payload.to_bytes()
            parts: list[Any] = [_header(len(payload) + 1), tag, payload]
            with sending:
                while parts:
                    parts = _after(parts, channel.sendmsg(parts))

        return on_sample

    subscribers = [session.declare_subscriber(key, relay(bytes([tag]))) for tag, key in enumerate(RelayApi.KEYS)]
    channel.recv(1)  # blocks until the host shuts the socket down
    for subscriber in subscribers:
        subscriber.undeclare()
    session.close()
    os._exit(0)  # see peer_role


class ZenohApi:
    """zenoh in this process: only ever made in the baseline subprocess."""

    def __init__(self, config: dict[str, Any]) -> None:
        import zenoh

        self._zenoh = zenoh
        self.session = zenoh.open(zenoh.Config.from_json5(json.dumps(config)))
        self._subscribers: list[Any] = []

    def put(self, key: str, payload: bytes, block: bool = False) -> None:
        if block:
            self.session.put(key, payload, congestion_control=self._zenoh.CongestionControl.BLOCK)
        else:
            self.session.put(key, payload)

    def flush(self) -> None:
        """zenoh's put has already run when it returns."""

    def subscribe(self, key: str, callback: Callable[[Any], None]) -> None:
        def on_sample(sample: Any) -> None:
            sample.payload.to_bytes()  # what a user does; the sidecar hands out bytes already
            callback(sample)

        self._subscribers.append(self.session.declare_subscriber(key, on_sample))

    def close(self) -> None:
        for subscriber in self._subscribers:
            subscriber.undeclare()
        self.session.close()


class Meter:
    """A callback that counts and notes the time of the first and last call."""

    def __init__(self) -> None:
        self.reset(1)

    def reset(self, expected: int) -> None:
        self.count, self.expected = 0, expected
        self.first = self.last = 0.0
        self.done = threading.Event()

    def __call__(self, _sample: Any) -> None:
        now = time.perf_counter()
        if self.count == 0:
            self.first = now
        self.count += 1
        self.last = now
        if self.count >= self.expected:
            self.done.set()


def _until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` (bounded): for handshakes, never inside a measurement."""
    deadline = time.monotonic() + BOUND
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {BOUND:g}s: {what}")
        time.sleep(0.01)


# ----------------------------------------------------------------- the peer process


class Peer:
    """The peer process (``--role peer``), driven over stdin/stdout lines."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--role", "peer", "--port", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ask("ready")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())
        self._lines.put("")

    def ask(self, *words: object) -> str:
        assert self.process.stdin is not None
        if words[0] != "ready":
            self.process.stdin.write(" ".join(map(str, words)) + "\n")
            self.process.stdin.flush()
        line = self._lines.get(timeout=BOUND)
        head, _, value = line.partition(" ")
        if head != words[0]:
            raise RuntimeError(f"peer answered {line!r} to {words}")
        return value

    def count(self) -> int:
        return int(self.ask("count"))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(BOUND)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(BOUND)


def peer_role(port: int) -> None:
    """Count what arrives on PUT_KEY, and apart from it the put probes; publish on request
    (congestion control block)."""
    import zenoh

    session = zenoh.open(zenoh.Config.from_json5(json.dumps(peer_config(port))))
    received: list[None] = []
    heard: list[None] = []
    subscribers = [
        session.declare_subscriber(PUT_KEY, lambda sample: received.append(None)),
        session.declare_subscriber(PUT_PROBE_KEY, lambda sample: heard.append(None)),
    ]
    publisher = session.declare_publisher(DELIVER_KEY, congestion_control=zenoh.CongestionControl.BLOCK)
    print("ready", flush=True)
    for line in sys.stdin:
        command, *words = line.split()
        if command == "count":
            print("count", len(received), flush=True)
        elif command == "heard":
            print("heard", len(heard), flush=True)
        elif command == "reset":
            received.clear()
            print("reset", flush=True)
        elif command == "probe":
            session.put(PROBE_KEY, b"p")
            print("probe", flush=True)
        elif command == "publish":
            payload = b"x" * int(words[1])
            for _ in range(int(words[0])):
                publisher.put(payload)
            print("publish", flush=True)
    for subscriber in subscribers:
        subscriber.undeclare()
    publisher.undeclare()
    session.close()
    os._exit(0)  # a session that had a callback subscriber can hang a normal exit (zenoh-python #434)


# ----------------------------------------------------------------- measurements


def measure_put(api: Api, peer: Peer, size: int, count: int) -> dict[str, float]:
    def probe() -> bool:
        api.put(PUT_PROBE_KEY, b"p")
        api.flush()
        return int(peer.ask("heard")) > 0

    _until(probe, "the peer's subscription to be known")
    payload = b"x" * size
    peer.ask("reset")
    start = time.perf_counter()
    for _ in range(count):
        api.put(PUT_KEY, payload, block=True)
    api.flush()
    rate = count / (time.perf_counter() - start)
    return {"rate": rate, "delivered": _settled_count(peer, count) / count}


def _settled_count(peer: Peer, count: int) -> int:
    """What the peer received once that stopped growing (all of it, unless something dropped)."""
    last, deadline = -1, time.monotonic() + BOUND
    while (now := peer.count()) not in (last, count) and time.monotonic() < deadline:
        last = now
        time.sleep(0.1)
    return now


def measure_delivery(api: Api, peer: Peer, size: int, count: int, meters: tuple[Meter, Meter]) -> dict[str, float]:
    meter, probes = meters
    meter.reset(count)
    _until(lambda: peer.ask("probe") == "" and probes.done.wait(0.05), "the subscription to be known to the peer")
    peer.ask("publish", count, size)
    if not meter.done.wait(BOUND):
        raise TimeoutError(f"{meter.count} of {count} samples delivered within {BOUND:g}s")
    return {"rate": (count - 1) / (meter.last - meter.first)}


def measure_end_to_end(make: Callable[[dict[str, Any], str], Api], count: int, rounds: int) -> dict[str, float]:
    port = free_port()
    publisher = make(peer_config(port), "bench-pub")
    subscriber = make(peer_config(connect_ports=(port,)), "bench-sub")
    try:
        meter, probes = Meter(), Meter()
        subscriber.subscribe(E2E_KEY, meter)
        subscriber.subscribe(PROBE_KEY, probes)

        def probe() -> bool:
            publisher.put(PROBE_KEY, b"p", block=True)
            publisher.flush()
            return probes.done.wait(0.05)

        _until(probe, "the subscription to be known to the publisher")
        payload = b"x" * SMALL

        def one_round() -> dict[str, float]:
            meter.reset(count)
            start = time.perf_counter()
            for _ in range(count):
                publisher.put(E2E_KEY, payload, block=True)
            publisher.flush()
            if not meter.done.wait(BOUND):
                raise TimeoutError(f"{meter.count} of {count} samples arrived within {BOUND:g}s")
            return {"rate": count / (meter.last - start)}

        return _best(rounds, one_round)
    finally:
        subscriber.close()
        publisher.close()


def _best(rounds: int, measure: Callable[..., dict[str, float]], *args: Any) -> dict[str, float]:
    """The round with the highest rate: the one least disturbed by whatever else the machine ran."""
    return max((measure(*args) for _ in range(rounds)), key=lambda result: result["rate"])


def measure_all(
    make: Callable[[dict[str, Any], str], Api], small: int, large: int, rounds: int
) -> dict[str, dict[str, float]]:
    """put, delivery and end to end figures with one session (and a peer), then two sessions."""
    results: dict[str, dict[str, float]] = {}
    peer = Peer()
    api = make(peer_config(connect_ports=(peer.port,)), "bench")
    try:
        meters = Meter(), Meter()
        api.subscribe(DELIVER_KEY, meters[0])
        api.subscribe(PROBE_KEY, meters[1])  # declared after: once it is known, so is the other
        for size, count in ((SMALL, small), (LARGE, large)):
            results[f"put {size}"] = _best(rounds, measure_put, api, peer, size, count)
        for size, count in ((SMALL, small), (LARGE, large)):
            results[f"delivery {size}"] = _best(rounds, measure_delivery, api, peer, size, count, meters)
    finally:
        api.close()
        peer.close()
    results["end to end"] = measure_end_to_end(make, small, rounds)
    return results


def measure_relay(size: int, count: int, rounds: int) -> dict[str, float]:
    """Delivery through the bare relay (see RelayApi), best of ``rounds``."""
    peer = Peer()
    relay = RelayApi(peer_config(connect_ports=(peer.port,)))
    try:
        meters = Meter(), Meter()
        for key, meter in zip(RelayApi.KEYS, meters, strict=True):
            relay.subscribe(key, meter)
        return _best(rounds, measure_delivery, relay, peer, size, count, meters)
    finally:
        relay.close()
        peer.close()


def baseline_role(small: int, large: int, rounds: int) -> None:
    """In-process zenoh (this subprocess may import it): print the figures as JSON."""
    print(json.dumps(measure_all(lambda config, _name: ZenohApi(config), small, large, rounds)), flush=True)
    sys.stdout.flush()
    os._exit(0)  # see peer_role


def measure_restart(repeat: int) -> dict[str, float]:
    """Median cold start (start() to the first served call) and restart (kill -9 to the first served call)."""
    colds, restarts = [], []
    for index in range(repeat):
        sidecar = Sidecar(f"bench-restart-{index}", peer_config(), log_level="warning")
        try:
            start = time.perf_counter()
            sidecar.start()
            sidecar.subscribe("bench/restart", lambda sample: None)
            sidecar.info()
            colds.append(time.perf_counter() - start)
            pid = sidecar.pid
            assert pid is not None
            start = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            _first_served_call(sidecar)
            restarts.append(time.perf_counter() - start)
            assert sidecar.incarnation == 2, "the call was served by the killed worker"
        finally:
            sidecar.stop()
    return {"cold": statistics.median(colds), "restart": statistics.median(restarts)}


def _first_served_call(sidecar: Sidecar) -> None:
    """A call right after the kill may still go to the dead worker (SidecarCrashed); the next waits
    through the restart. A user retries the same way."""
    for _ in range(3):
        try:
            sidecar.info(timeout=BOUND)
        except SidecarCrashed:
            continue
        return
    raise RuntimeError("no call was served after the restart")


def _run_baseline(small: int, large: int, rounds: int) -> dict[str, dict[str, float]]:
    command = [sys.executable, __file__, "--role", "baseline", "--small", str(small), "--large", str(large)]
    command += ["--rounds", str(rounds)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=BOUND * 3, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"baseline failed:\n{completed.stderr[-3000:]}")
    result: dict[str, dict[str, float]] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100_000, help="samples per 64 B figure (default 100000)")
    parser.add_argument("--large", type=int, default=10_000, help="samples per 64 KiB figure (default 10000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per rate figure; the best counts (default 3)")
    parser.add_argument("--repeat", type=int, default=5, help="cold starts and restarts to take the median of")
    parser.add_argument("--quick", action="store_true", help="tiny counts, for a smoke test")
    parser.add_argument("--role", choices=("host", "peer", "baseline", "relay"), default="host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.quick:
        options.small, options.large, options.rounds, options.repeat = 2_000, 100, 1, 1
    if options.role == "peer":
        peer_role(options.port)
        return
    if options.role == "baseline":
        baseline_role(options.small, options.large, options.rounds)
        return
    if options.role == "relay":
        relay_role(options.fd, json.loads(options.config))
        return

    began = time.perf_counter()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    sidecar = measure_all(SidecarApi, options.small, options.large, options.rounds)
    relay = measure_relay(LARGE, options.large, options.rounds)
    inprocess = _run_baseline(options.small, options.large, options.rounds)
    restart = measure_restart(options.repeat)
    assert "zenoh" not in sys.modules, "the benchmarking host imported zenoh"

    print(
        f"zenoh through the sidecar vs in-process: {options.small} x 64 B, {options.large} x 64 KiB, "
        f"best of {options.rounds} rounds"
    )
    print(f"  {'':<24}{'sidecar':>12}{'in-process':>12}{'ratio':>8}  goal")
    missed = []
    for label, key, goal in (
        ("put 64 B (puts/s)", f"put {SMALL}", 0.5),
        ("put 64 KiB (puts/s)", f"put {LARGE}", 0.5),
        ("delivery 64 B (/s)", f"delivery {SMALL}", 0.5),
        ("delivery 64 KiB (/s)", f"delivery {LARGE}", 0.5),
        ("end to end 64 B (/s)", "end to end", None),
    ):
        ours, theirs = sidecar[key]["rate"], inprocess[key]["rate"]
        ratio = ours / theirs
        verdict = "" if goal is None else f">= {goal}  " + ("met" if ratio >= goal else "MISSED")
        if goal is not None and ratio < goal:
            missed.append(label)
        print(f"  {label:<24}{ours:>12.0f}{theirs:>12.0f}{ratio:>8.3f}  {verdict}")
    ours, theirs = relay["rate"], inprocess[f"delivery {LARGE}"]["rate"]
    print(f"  {'delivery 64 KiB, relay':<24}{ours:>12.0f}{theirs:>12.0f}{ours / theirs:>8.3f}  (no goal: a bare relay)")
    print(f"  ratio delivery 64 KiB sidecar/relay {sidecar[f'delivery {LARGE}']['rate'] / ours:.3f}")
    for size in (SMALL, LARGE):
        print(
            f"  put {size} B reached the peer: sidecar {sidecar[f'put {size}']['delivered']:.0%}, "
            f"in-process {inprocess[f'put {size}']['delivered']:.0%}"
        )
    ratio = restart["restart"] / restart["cold"]
    if ratio > 1.5:
        missed.append("restart")
    print(f"restart, median of {options.repeat} (ms)")
    print(f"  cold start (start() to first served call)   {restart['cold'] * 1000:8.1f}")
    print(f"  restart (kill -9 to first served call)      {restart['restart'] * 1000:8.1f}")
    print(f"  ratio restart/cold {ratio:.3f}  <= 1.5  {'met' if ratio <= 1.5 else 'MISSED'}")
    print(
        f"goals {'all met' if not missed else 'missed: ' + ', '.join(missed)}; took {time.perf_counter() - began:.1f}s"
    )


if __name__ == "__main__":
    main()
