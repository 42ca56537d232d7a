"""Interrupts: Ctrl-C (or any exception a signal handler raises) at any point of a call on the main thread
leaves the endpoint usable: the call raises, and the next calls on the channel are answered.

A signal handler runs in the main thread where the interpreter checks for it: on a call's return (the
call's result then lost), on a function's entry, on a backward jump. The sweep raises at each such point
of our code in turn, deterministically, through a profile hook: an exception raised there is raised
as the signal handler's would be (a C function's result is dropped too). KeyboardInterrupt, as Ctrl-C
raises: asyncio lets it through its callbacks, as it does Ctrl-C's. The stress test sends real
SIGINTs at random moments of a stream of calls. Both run against a real child (``peers/echo_peer.py``).
"""

from __future__ import annotations

import asyncio
import functools
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import boss_sidecar
from boss_sidecar.rpc import Endpoint
from peers import spawned

WAIT = 30.0  # the bound on every wait here; a passing run takes a small fraction of it
OURS = str(Path(boss_sidecar.__file__).parent)
SWEEP_LIMIT = 2000  # points of one call at most; a call of ours has a few hundred


class Parent:
    """What the parent serves back to the child: events land here."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def seen(self, item: Any) -> None:
        self.events.append(item)

    def blocked(self) -> None:
        """The child's ``block`` says it is in."""


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    """The host's side (callers read their replies) of a channel to a real child."""
    with spawned("echo_peer.py") as (connection, _process):
        endpoint = Endpoint(connection, Parent(), name="parent", callers_read=True)
        try:
            endpoint.wait_peer(WAIT)
            yield endpoint
        finally:
            endpoint.close()


def _interrupt_at(point: int) -> Callable[[FrameType, str, Any], None]:
    """A profile hook raising KeyboardInterrupt (as Ctrl-C does) at the ``point``-th check for signals in our
    code: a function's entry or return, a C function's return. Raising unsets the hook, so it fires once."""
    seen = 0

    def hook(frame: FrameType, event: str, _arg: Any) -> None:
        nonlocal seen
        if event in ("call", "return", "c_return") and frame.f_code.co_filename.startswith(OURS):
            seen += 1
            if seen == point:
                raise KeyboardInterrupt

    return hook


def _fired(call: Callable[[], Any], point: int) -> bool:
    """Run ``call`` with an interrupt at ``point``; whether it was interrupted (False: it has fewer points)."""
    sys.setprofile(_interrupt_at(point))
    try:
        call()
    except KeyboardInterrupt:
        return True
    finally:
        sys.setprofile(None)
    return False


def _still_answers(endpoint: Endpoint, mark: Any) -> None:
    assert endpoint.call("echo", mark, timeout=WAIT) == mark


CALLS: dict[str, Callable[[Endpoint], Any]] = {
    "sync": lambda endpoint: endpoint.call("echo", "x", timeout=WAIT),
    "sync, large reply": lambda endpoint: endpoint.call("make", 300_000, timeout=WAIT),
    "sync, events before the reply": lambda endpoint: endpoint.call("notify_then_return", 2, timeout=WAIT),
    "async": lambda endpoint: asyncio.run(endpoint.acall("echo", "x", timeout=WAIT)),
}


@pytest.mark.parametrize("kind", list(CALLS))
def test_an_interrupt_at_any_point_of_a_call_leaves_the_channel_usable(endpoint: Endpoint, kind: str) -> None:
    """Interrupted at each point of our code in turn, the call raises and the channel answers the next call."""
    call = CALLS[kind]
    point = 0
    while point < SWEEP_LIMIT:
        point += 1
        if not _fired(lambda: call(endpoint), point):
            break  # past the call's last point: it ran whole
        _still_answers(endpoint, ("after", point))
    assert 20 < point < SWEEP_LIMIT, f"swept {point} points"
    assert endpoint.call("make", 1_000_000, timeout=WAIT) == b"x" * 1_000_000


def test_sigint_at_random_moments_of_a_stream_of_calls_leaves_the_channel_usable(endpoint: Endpoint) -> None:
    """200 real SIGINTs, each at a random moment of a call (sync, async, with events, a large reply): after
    each, the channel answers. The async calls run on one loop that lives on, as in a host that catches
    KeyboardInterrupt and carries on."""

    handled = threading.Event()

    def interrupt(_signum: int, _frame: Any) -> None:
        handled.set()
        raise KeyboardInterrupt  # our own handler: asyncio leaves it in place, and lets KeyboardInterrupt through

    def interrupt_after(delay: float) -> None:
        time.sleep(delay)  # not a synchronisation: the random moment of the interrupt
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    loop = asyncio.new_event_loop()
    calls: list[Callable[[], Any]] = [
        *(functools.partial(call, endpoint) for name, call in CALLS.items() if name != "async"),
        lambda: loop.run_until_complete(endpoint.acall("echo", "x", timeout=WAIT)),
    ]
    chooser = random.Random(1234)
    previous = signal.signal(signal.SIGINT, interrupt)
    interrupted = 0
    try:
        for index in range(200):
            handled.clear()
            interrupter = threading.Thread(target=interrupt_after, args=(chooser.uniform(0, 0.001),))
            try:
                try:
                    interrupter.start()
                    chooser.choice(calls)()
                finally:
                    interrupter.join(WAIT)
                    assert handled.wait(WAIT)  # the signal came after the call: its handler runs in this wait
            except KeyboardInterrupt:
                interrupted += 1
            _still_answers(endpoint, ("after", index))
    finally:
        signal.signal(signal.SIGINT, previous)
        for task in asyncio.all_tasks(loop):  # calls whose loop stopped under them
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    assert interrupted == 200
