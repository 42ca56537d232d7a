"""Endpoint: calls both ways, errors, timeouts, peer death, concurrency and limits.

What users rely on is proven against a real child process (``peers/echo_peer.py``, a fresh
interpreter on a private pipe); details of message handling use an in-process pipe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import os
import pickle
import signal
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from subprocess import Popen
from typing import Any

import pytest

from boss_sidecar._pickling import _dump_parts
from boss_sidecar._standby import _Standby
from boss_sidecar.errors import (
    CallTimeout,
    EncodeError,
    MessageTooLarge,
    ProtocolError,
    RemoteError,
    SidecarCrashed,
    SidecarError,
    SidecarUnavailable,
)
from boss_sidecar.protocol import Call, Ping, new_id
from boss_sidecar.rpc import MAX_BUSY_WAIT, Endpoint
from peers import EXIT_TIMEOUT, spawned

WAIT = 30.0  # the bound on every wait in these tests; passing runs take a small fraction of it


@dataclass
class ParentTarget:
    """What the parent serves back to the child."""

    blocked_event: threading.Event = field(default_factory=threading.Event)
    events: list[Any] = field(default_factory=list)
    event_threads: set[str] = field(default_factory=set)

    def greet(self, name: str) -> str:
        return f"hello {name}"

    def blocked(self) -> None:
        self.blocked_event.set()

    def seen(self, item: Any) -> None:
        self.events.append(item)
        self.event_threads.add(threading.current_thread().name)


@dataclass
class Child:
    endpoint: Endpoint
    process: Popen[bytes]
    target: ParentTarget

    def wait_blocked(self) -> None:
        """Wait until the child reports that a ``block`` call is running there."""
        assert self.target.blocked_event.wait(WAIT), "the child never entered block()"
        self.target.blocked_event.clear()


@contextlib.contextmanager
def _child(*peer_args: str, **options: Any) -> Iterator[Child]:
    with spawned("echo_peer.py", *peer_args) as (connection, process):
        target = ParentTarget()
        # The parent mostly calls, as the host does: its callers read their own replies.
        endpoint = Endpoint(connection, target, name="parent", **{"callers_read": True, **options})
        try:
            endpoint.wait_peer(WAIT)
            yield Child(endpoint, process, target)
        finally:
            endpoint.close()


@pytest.fixture
def child() -> Iterator[Child]:
    with _child() as spawned_child:
        yield spawned_child


@pytest.fixture
def background() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    """Threads for calls that block; a test leaves none running."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        yield pool


# ----------------------------------------------------------------- real child process


def test_call_returns_the_child_result(child: Child) -> None:
    """A call runs in the child and its result comes back."""
    assert child.endpoint.call("add", 2, b=3) == 5
    assert child.endpoint.call("echo", {"nested": [1, (2, 3)]}) == {"nested": [1, (2, 3)]}


def test_hello_names_the_child_process(child: Child) -> None:
    """The peer's hello carries its pid and name."""
    assert child.endpoint.peer is not None
    assert child.endpoint.peer.pid == child.process.pid
    assert child.endpoint.peer.name == "echo-peer"


def test_child_calls_back_into_the_parent_during_a_call(child: Child) -> None:
    """The channel is symmetric: the child calls the parent's object while the parent waits on it."""
    assert child.endpoint.call("call_back", "greet", "world") == "hello world"


def test_attribute_get_and_set(child: Child) -> None:
    """Attribute reads and writes reach the child's object, acknowledged or not."""
    assert child.endpoint.get_attribute("value") == 1
    child.endpoint.set_attribute("value", 5)
    assert child.endpoint.get_attribute("value") == 5
    child.endpoint.set_attribute_nowait("value", 7)
    assert child.endpoint.get_attribute("value") == 7


def test_remote_exception_is_reraised_as_itself_with_remote_traceback(child: Child) -> None:
    """An exception that pickles arrives as itself, with the child's traceback in its notes."""
    with pytest.raises(ValueError) as caught:
        child.endpoint.call("raise_builtin", "boom")
    assert caught.value.args == ("boom",)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "remote traceback" in notes
    assert "raise_builtin" in notes
    assert "echo_peer.py" in notes


def test_exception_that_cannot_be_rebuilt_arrives_as_remote_error(child: Child) -> None:
    """An exception whose pickle does not load becomes RemoteError with type, message and traceback."""
    with pytest.raises(RemoteError) as caught:
        child.endpoint.call("raise_stubborn", 7, "stubborn")
    error = caught.value
    assert error.type_name.endswith("Stubborn")
    assert error.message == "7: stubborn"
    assert "raise_stubborn" in error.traceback


def test_exception_class_unknown_to_the_parent_arrives_as_remote_error(child: Child) -> None:
    """An exception whose class exists only in the child becomes RemoteError with type, message and traceback."""
    with pytest.raises(RemoteError) as caught:
        child.endpoint.call("raise_child_only", "only here")
    error = caught.value
    assert error.type_name.endswith("ChildOnly")
    assert error.message == "only here"
    assert "raise_child_only" in error.traceback
    assert child.endpoint.call("echo", 1) == 1


def test_unpicklable_argument_raises_encode_error_naming_it(child: Child) -> None:
    """Nothing is sent; the error names the argument; the channel stays usable."""
    with pytest.raises(EncodeError, match=r"argument 1 \(lock\)"):
        child.endpoint.call("add", 1, threading.Lock())
    with pytest.raises(EncodeError, match=r"keyword argument 'b' \(function\)"):
        child.endpoint.call("add", 1, b=lambda: 2)
    with pytest.raises(EncodeError, match=r"value for 'value'"):
        child.endpoint.set_attribute("value", threading.Lock())
    assert child.endpoint.pending_count == 0
    assert child.endpoint.call("add", 1, 2) == 3


def test_unpicklable_result_raises_encode_error(child: Child) -> None:
    """The child cannot send its result; the caller gets EncodeError naming the result, not a hang."""
    with pytest.raises(EncodeError, match="result of call 'unpicklable_result'"):
        child.endpoint.call("unpicklable_result")
    assert child.endpoint.call("echo", "still fine") == "still fine"


@pytest.mark.parametrize("name", ["_secret", "__class__", "__init__", "os.path", "echo.__globals__", "no such"])
def test_private_dunder_and_dotted_names_are_refused(child: Child, name: str) -> None:
    """Only public attribute names of the served object are reachable, for calls, gets and sets."""
    with pytest.raises(AttributeError):
        child.endpoint.call(name)
    with pytest.raises(AttributeError):
        child.endpoint.get_attribute(name)
    with pytest.raises(AttributeError):
        child.endpoint.set_attribute(name, 1)
    assert child.endpoint.get_attribute("value") == 1


def test_child_is_refused_private_names_of_the_parent(child: Child) -> None:
    """The parent's served object is guarded the same way."""
    with pytest.raises(AttributeError, match="not exposed"):
        child.endpoint.call("call_back", "_private")


def test_call_without_answer_raises_call_timeout(child: Child, background: Any) -> None:
    """A call that gets no answer in time raises CallTimeout; the late answer is dropped."""
    with pytest.raises(CallTimeout, match=r"call 'block' got no answer within 0\.2s"):
        child.endpoint.call("block", timeout=0.2)
    assert child.endpoint.pending_count == 0
    child.endpoint.call("release")
    assert child.endpoint.call("echo", "after") == "after"


def test_async_call_without_answer_raises_call_timeout(child: Child) -> None:
    """acall honours its timeout the same way."""

    async def main() -> None:
        with pytest.raises(CallTimeout):
            await child.endpoint.acall("block", timeout=0.2)
        assert child.endpoint.pending_count == 0
        await child.endpoint.acall("release")
        assert await child.endpoint.acall("echo", 3) == 3

    asyncio.run(main())


def test_events_sent_before_a_reply_have_run_when_the_call_returns_never_on_the_callers_thread(child: Child) -> None:
    """The caller reads its own reply here, and with it the events the child sent first: those run in
    order, all before the call returns, and on another thread (a caller may hold locks they need)."""
    for _ in range(5):
        child.target.events.clear()
        assert child.endpoint.call("notify_then_return", 200, timeout=WAIT) == 200
        assert child.target.events == list(range(200))
    assert threading.current_thread().name not in child.target.event_threads


def test_events_sent_before_an_async_reply_have_run_when_it_returns_never_on_the_loop() -> None:
    """The lone async caller reads on its loop thread too, briefly (here long enough to read the events): the
    events that come first still run in order before its call returns, and never on the loop."""

    async def main(child: Child) -> None:
        for _ in range(5):
            child.target.events.clear()
            assert await child.endpoint.acall("notify_then_return", 200, timeout=WAIT) == 200
            assert child.target.events == list(range(200))

    with _child(busy_wait=MAX_BUSY_WAIT) as spawned_child:
        asyncio.run(main(spawned_child))
        assert threading.current_thread().name not in spawned_child.target.event_threads


class _Interrupted(Exception):
    """What our SIGINT handler raises in the main thread (as Ctrl-C raises KeyboardInterrupt)."""


def test_a_call_interrupted_by_a_signal_leaves_the_channel_usable(child: Child) -> None:
    """Ctrl-C while the main thread waits for (or reads) its reply: the call raises, the channel and
    everything else on it carry on."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise _Interrupted

    def interrupt_once_blocked() -> None:
        child.wait_blocked()
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, interrupt)
    interrupter = threading.Thread(target=interrupt_once_blocked)
    try:
        interrupter.start()
        with pytest.raises(_Interrupted):
            child.endpoint.call("block", timeout=WAIT)
    finally:
        interrupter.join(WAIT)
        signal.signal(signal.SIGINT, previous)
    child.endpoint.call("release", timeout=WAIT)
    assert child.endpoint.call("echo", "after", timeout=WAIT) == "after"
    assert child.endpoint.call("make", 1_000_000, timeout=WAIT) == b"x" * 1_000_000


def test_a_caller_waiting_on_a_slow_call_busy_waits_only_briefly(child: Child, background: Any) -> None:
    """The lone caller polls for its reply only ``busy_wait`` long, then sleeps: a long wait costs no CPU."""

    def timed_call() -> float:
        start = time.thread_time()
        assert child.endpoint.call("wait_for_release", timeout=WAIT) is True  # no event meanwhile: the caller reads
        return time.thread_time() - start

    waited = background.submit(timed_call)
    time.sleep(0.5)  # not a synchronisation: the length of the wait whose CPU cost is measured
    child.endpoint.call("release")
    assert waited.result(WAIT) < 0.25, "the caller kept polling while its call ran"


def test_an_async_caller_waiting_on_a_slow_call_busy_waits_only_briefly(child: Child, background: Any) -> None:
    """The lone async caller polls for its reply on its loop thread only ``busy_wait`` long."""

    async def timed_call() -> float:
        start = time.thread_time()
        assert await child.endpoint.acall("wait_for_release", timeout=WAIT) is True
        return time.thread_time() - start

    def release_later() -> None:
        time.sleep(0.5)  # not a synchronisation: the length of the wait whose CPU cost is measured
        child.endpoint.call("release")

    releasing = background.submit(release_later)
    assert asyncio.run(timed_call()) < 0.25, "the loop kept polling while its call ran"
    releasing.result(WAIT)


def test_a_lone_async_caller_never_blocks_its_loop_on_a_message_only_partly_come(
    raw_peer: tuple[Connection, Endpoint],
) -> None:
    """The loop reads only what has come: a peer stalled in the middle of a message leaves it free."""
    raw, endpoint = raw_peer
    body = pickle.dumps({"id": 99, "type": "g", "name": "value"})
    frame = struct.pack("!i", len(body)) + body
    loop_free = threading.Event()
    in_time: list[bool] = []

    def finish_the_message() -> None:
        in_time.append(loop_free.wait(WAIT))  # a loop blocked reading sees the rest only after WAIT
        os.write(raw.fileno(), frame[len(frame) // 2 :])

    async def main() -> None:
        os.write(raw.fileno(), frame[: len(frame) // 2])
        calling = asyncio.ensure_future(endpoint.acall("echo", "x", timeout=WAIT))
        await asyncio.sleep(0)  # the call's first step ran: it sent, and read what had come
        loop_free.set()
        request = await asyncio.to_thread(_receive, raw)
        assert await asyncio.to_thread(_receive, raw) == {"id": 99, "type": "r", "payload": 1}
        raw.send({"id": request["id"], "type": "r", "payload": "x"})
        assert await calling == "x"

    finisher = threading.Thread(target=finish_the_message)
    finisher.start()
    try:
        asyncio.run(main())
    finally:
        loop_free.set()
        finisher.join(WAIT)
    assert in_time == [True], "the loop blocked on a message only partly come"


@pytest.mark.parametrize("busy_wait", [0.0, 0.001])
def test_calls_work_with_busy_waiting_off_or_longer(busy_wait: float) -> None:
    """``busy_wait`` 0 turns polling off; either way calls, events and pings behave the same."""
    with _child(busy_wait=busy_wait) as spawned_child:
        assert [spawned_child.endpoint.call("add", n, 1) for n in range(50)] == list(range(1, 51))
        assert spawned_child.endpoint.call("notify_then_return", 3) == 3
        assert spawned_child.endpoint.ping() >= 0


@pytest.mark.parametrize("busy_wait", [-1e-6, 0.5, math.nan])
def test_busy_wait_out_of_range_is_refused_naming_it(busy_wait: float) -> None:
    a, b = Pipe()
    with a, b, pytest.raises(ValueError, match=r"busy_wait must be between 0 and 0\.01 seconds"):
        Endpoint(a, busy_wait=busy_wait)


def test_slow_method_blocks_neither_other_calls_nor_ping(child: Child, background: Any) -> None:
    """While one served call waits, the child still answers calls, attribute reads and heartbeats."""
    slow = background.submit(child.endpoint.call, "block", timeout=WAIT)
    child.wait_blocked()
    assert child.endpoint.call("echo", 2) == 2
    assert child.endpoint.get_attribute("value") == 1
    assert child.endpoint.ping() >= 0
    assert not slow.done()
    child.endpoint.call("release")
    assert slow.result(WAIT) is True


def test_peer_killed_mid_call_fails_the_call_and_later_ones(child: Child, background: Any) -> None:
    """SIGKILL of the child fails the blocked call with SidecarCrashed, not a timeout; later calls fail at once."""
    blocked = background.submit(child.endpoint.call, "block", timeout=10 * WAIT)
    child.wait_blocked()
    child.process.send_signal(signal.SIGKILL)
    with pytest.raises(SidecarCrashed):
        blocked.result(WAIT)
    assert child.endpoint.closed.wait(WAIT)
    with pytest.raises(SidecarCrashed):
        child.endpoint.call("echo", 1, timeout=10 * WAIT)
    assert child.process.wait(EXIT_TIMEOUT) == -signal.SIGKILL


def test_thousand_concurrent_calls_from_threads_each_get_their_own_answer(child: Child) -> None:
    """1000 threads call at once; every one gets the answer to its own call."""
    count = 1000
    results: dict[int, Any] = {}
    start = threading.Barrier(count, timeout=WAIT)

    def one(index: int) -> None:
        start.wait()
        results[index] = child.endpoint.call("echo", index, timeout=WAIT)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert results == {index: index for index in range(count)}
    assert child.endpoint.pending_count == 0


def test_thousand_concurrent_calls_from_asyncio_tasks_each_get_their_own_answer(child: Child) -> None:
    """1000 tasks await acall at once; every one gets the answer to its own call."""

    async def main() -> list[Any]:
        return await asyncio.gather(*(child.endpoint.acall("echo", index, timeout=WAIT) for index in range(1000)))

    assert asyncio.run(main()) == list(range(1000))
    assert child.endpoint.pending_count == 0


def test_sync_and_async_callers_at_once_each_get_their_own_answer(child: Child) -> None:
    """Threads calling (each may read for itself), tasks awaiting (the standby reads for them) and
    events from the child, all at once: every call gets its own answer, every event runs, in order."""
    rounds, threads_count = 50, 8
    results: dict[tuple[str, int, int], Any] = {}

    def thread_calls(worker: int) -> None:
        for index in range(rounds):
            results["thread", worker, index] = child.endpoint.call("echo", (worker, index), timeout=WAIT)
        results["events", worker, 0] = child.endpoint.call("notify_then_return", 20, timeout=WAIT)

    async def task_calls(worker: int) -> None:
        for index in range(rounds):
            results["task", worker, index] = await child.endpoint.acall("echo", (worker, index), timeout=WAIT)

    async def tasks() -> None:
        await asyncio.gather(*(task_calls(worker) for worker in range(threads_count)))

    threads = [threading.Thread(target=thread_calls, args=(worker,)) for worker in range(threads_count)]
    for thread in threads:
        thread.start()
    asyncio.run(tasks())
    for thread in threads:
        thread.join(WAIT)
    expected: dict[tuple[str, int, int], Any] = {
        (kind, worker, index): (worker, index)
        for kind in ("thread", "task")
        for worker in range(threads_count)
        for index in range(rounds)
    }
    expected |= {("events", worker, 0): 20 for worker in range(threads_count)}
    assert results == expected
    assert sorted(child.target.events) == sorted(list(range(20)) * threads_count)
    assert child.endpoint.call("echo", "after", timeout=WAIT) == "after"  # whoever holds the reading gives it up
    assert child.endpoint.pending_count == 0


def test_async_attribute_access(child: Child) -> None:
    """The awaitable get and set reach the child's object."""

    async def main() -> Any:
        await child.endpoint.aset_attribute("value", 11)
        return await child.endpoint.aget_attribute("value")

    assert asyncio.run(main()) == 11


def test_close_is_idempotent_ends_the_reader_and_the_child(child: Child) -> None:
    """close() twice is fine; the endpoint's threads end; later calls raise SidecarUnavailable; the child exits."""
    readers = [thread for thread in threading.enumerate() if thread.name.startswith("parent-")]
    assert "parent-standby" in [thread.name for thread in readers]  # the calling side's idle reader
    child.endpoint.close()
    child.endpoint.close("again")
    for thread in readers:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in readers)
    assert child.endpoint.is_closed
    with pytest.raises(SidecarUnavailable):
        child.endpoint.call("echo", 1)
    assert child.process.wait(EXIT_TIMEOUT) == 0


def test_close_fails_calls_in_flight_with_sidecar_unavailable(child: Child, background: Any) -> None:
    """Closing our end fails a waiting call at once instead of letting it time out."""
    blocked = background.submit(child.endpoint.call, "block", timeout=10 * WAIT)
    child.wait_blocked()
    child.endpoint.close()
    with pytest.raises(SidecarUnavailable, match="during call 'block'"):
        blocked.result(WAIT)


def test_oversized_argument_raises_message_too_large_and_channel_stays_usable() -> None:
    """A call bigger than max_message_bytes is refused before sending; the next call works."""
    with _child(max_message_bytes=4096) as small:
        with pytest.raises(MessageTooLarge, match="exceeds the limit of 4096 bytes"):
            small.endpoint.call("echo", "x" * 10_000)
        assert small.endpoint.pending_count == 0
        assert small.endpoint.call("echo", "ok") == "ok"


def test_oversized_result_raises_message_too_large_and_channel_stays_usable() -> None:
    """A result bigger than the child's limit is refused there and reported to the caller."""
    with _child("--max-bytes", "4096") as small:
        with pytest.raises(MessageTooLarge, match="result of call 'make'"):
            small.endpoint.call("make", 10_000)
        assert small.endpoint.call("make", 10) == b"x" * 10


def test_oversized_incoming_reply_fails_only_its_call() -> None:
    """A reply bigger than our own limit is skipped and its call fails; the channel lives on."""
    with _child(max_message_bytes=4096) as small:
        with pytest.raises(MessageTooLarge, match="reply to call 'make'"):
            small.endpoint.call("make", 10_000)
        assert small.endpoint.call("make", 10) == b"x" * 10


def test_large_messages_arrive_whole_both_ways(child: Child) -> None:
    """Messages far bigger than the socket buffer are written in parts and read back whole."""
    payload = bytes(range(256)) * 20_000  # 5 MB
    assert child.endpoint.call("echo", payload) == payload


def test_concurrent_large_and_small_messages_keep_their_framing(child: Child) -> None:
    """Big and small messages from many threads interleave without corrupting each other."""
    payloads = [bytes([index]) * (1_000_000 if index % 2 else 10) for index in range(16)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda payload: child.endpoint.call("echo", payload, timeout=WAIT), payloads))
    assert results == payloads


def test_a_large_buffer_changed_right_after_sending_arrives_as_it_was_sent(child: Child) -> None:
    """Large payloads go out uncopied, but a mutable one is copied: changing it after notify() changes nothing sent."""
    original = bytes(range(256)) * 20_000  # 5 MB: more than the socket takes at once
    buffer = bytearray(original)
    child.process.send_signal(signal.SIGSTOP)  # the child reads nothing: most of it waits on our side
    try:
        child.endpoint.notify("record", buffer)
        buffer[:] = b"\0" * len(buffer)
        child.endpoint.notify("record", original)  # and an immutable one, which travels uncopied
    finally:
        child.process.send_signal(signal.SIGCONT)
    assert child.endpoint.call("recorded", timeout=WAIT) == [original, original]


def test_pickled_in_parts_is_pickled_the_same_with_large_bytes_uncopied() -> None:
    """The parts a message is sent in join to exactly what pickle.dumps makes."""
    large = b"x" * 70_000
    message = {"type": "e", "args": (large, bytearray(b"y" * 70_000), "small", [b"z" * 10])}
    parts = _dump_parts(message)
    assert b"".join(parts) == pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    assert any(part is large for part in parts)
    assert all(type(part) is bytes for part in parts)


def test_notify_events_run_in_order(child: Child) -> None:
    """One-way events run in the order they were sent, before a call sent after them."""
    for index in range(500):
        child.endpoint.notify("record", index)
    assert child.endpoint.call("recorded") == list(range(500))


# ----------------------------------------------------------------- in-process pipe


class Served:
    """A small object for the in-process tests."""

    value = 1

    def echo(self, value: Any = None) -> Any:
        return value

    async def later(self, value: Any) -> Any:
        await asyncio.sleep(0)
        return value


def _receive(connection: Connection) -> Any:
    """The next message on a raw connection, waiting at most WAIT."""
    assert connection.poll(WAIT), "no message arrived"
    return connection.recv()


def _receive_reply(connection: Connection, message_id: int) -> dict[str, Any]:
    """The reply with ``message_id``, skipping anything else the endpoint sends."""
    while True:
        message = _receive(connection)
        if message.get("id") == message_id and message.get("type") in ("r", "e"):
            return message  # type: ignore[no-any-return]


@pytest.fixture
def raw_peer() -> Iterator[tuple[Connection, Endpoint]]:
    """An Endpoint serving ``Served`` and the raw other end of its pipe (its hello already read)."""
    ours, theirs = Pipe()
    endpoint = Endpoint(theirs, Served(), name="served")
    try:
        assert _receive(ours)["type"] == "hello"
        yield ours, endpoint
    finally:
        endpoint.close()
        ours.close()


@pytest.fixture
def pair() -> Iterator[tuple[Endpoint, Endpoint]]:
    """Two endpoints on the two ends of one in-process pipe."""
    left_end, right_end = Pipe()
    left = Endpoint(left_end, Served(), name="left", callers_read=True)  # calls, as the host does
    right = Endpoint(right_end, Served(), name="right")
    try:
        yield left, right
    finally:
        left.close()
        right.close()


def test_starting_on_a_channel_whose_peer_is_gone_returns_and_closes() -> None:
    """start() never waits on the channel: a peer gone before it (a worker whose host just died)
    gives a closed endpoint, not a start() that blocks (tried many times: it was a race)."""
    for _ in range(30):
        ours, theirs = Pipe()
        ours.close()
        endpoint = Endpoint(theirs, Served(), name="orphan", start=False)
        starting = threading.Thread(target=endpoint.start, daemon=True)
        starting.start()
        starting.join(WAIT)
        assert not starting.is_alive(), "start() blocked"
        assert endpoint.closed.wait(WAIT)
        endpoint.close()


@pytest.mark.parametrize("standby", [True, False], ids=["standby", "no standby"])
def test_a_served_call_that_waits_holds_up_no_other_request(monkeypatch: pytest.MonkeyPatch, standby: bool) -> None:
    """While a served call waits, other calls and pings are answered: the standby reads meanwhile,
    or, where there is none (no epoll), the reading passed on before the call ran."""
    monkeypatch.setattr(_Standby, "SUPPORTED", standby)
    gate = _Gate()
    client_end, server_end = Pipe()
    server = Endpoint(server_end, gate, name="server")
    client = Endpoint(client_end, name="client")
    try:
        assert (server._standby is not None) is standby
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(client.call, "wait", timeout=WAIT)
            assert gate.entered.wait(WAIT)
            assert client.call("echo", 5, timeout=WAIT) == 5
            assert client.ping(timeout=WAIT) >= 0
            gate.release.set()
            assert waiting.result(WAIT) is True
    finally:
        gate.release.set()
        client.close()
        server.close()


class _Gate:
    """Serves ``wait``, which waits until released, and ``echo``."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def wait(self) -> bool:
        self.entered.set()
        return self.release.wait(WAIT)

    def echo(self, value: Any) -> Any:
        return value


def test_calls_read_together_are_not_held_up_by_a_slow_one() -> None:
    """The serving side (``callers_read=False``, as the worker) runs calls read together one after another:
    one that waits holds up neither the calls that came with it nor a ping that comes after."""
    gate = _Gate()
    ours, theirs = Pipe()
    server = Endpoint(theirs, gate, name="server", callers_read=False)
    try:
        assert _receive(ours)["type"] == "hello"
        calls = [Call(id=1, method="wait").to_wire(), Call(id=2, method="echo", args=(5,)).to_wire()]
        os.write(ours.fileno(), b"".join(_framed(call) for call in calls))  # one write: read as one batch
        assert gate.entered.wait(WAIT)
        assert _receive_reply(ours, 2) == {"id": 2, "type": "r", "payload": 5}
        ours.send(Ping(id=3, sent=0.0).to_wire())
        assert _receive(ours)["type"] == "pong"
        gate.release.set()
        assert _receive_reply(ours, 1)["payload"] is True
    finally:
        gate.release.set()
        server.close()
        ours.close()


def test_a_call_read_with_others_can_call_back_and_wait_for_the_answer() -> None:
    """A served call run in a batch that asks the peer something gets its answer (read by another thread
    meanwhile), and the batch's replies all come."""

    class Asker:
        endpoint: Endpoint | None = None

        def ask(self) -> Any:
            assert self.endpoint is not None
            return self.endpoint.call("greet", "you", timeout=WAIT)

        def echo(self, value: Any) -> Any:
            return value

    asker = Asker()
    ours, theirs = Pipe()
    server = asker.endpoint = Endpoint(theirs, asker, name="server", callers_read=False)
    try:
        assert _receive(ours)["type"] == "hello"
        calls = [Call(id=1, method="ask").to_wire(), Call(id=2, method="echo", args=(5,)).to_wire()]
        os.write(ours.fileno(), b"".join(_framed(call) for call in calls))  # one write: read as one batch
        seen = [_receive(ours)]
        while seen[-1].get("method") != "greet":  # the echo's reply may come first
            seen.append(_receive(ours))
        ours.send({"id": seen[-1]["id"], "type": "r", "payload": "hello you"})
        while seen[-1].get("id") != 1:
            seen.append(_receive(ours))
        assert seen[-1] == {"id": 1, "type": "r", "payload": "hello you"}
        if {"id": 2, "type": "r", "payload": 5} not in seen:
            assert _receive_reply(ours, 2)["payload"] == 5
    finally:
        server.close()
        ours.close()


def _framed(message: dict[str, Any]) -> bytes:
    """``message`` as ``Connection.send`` frames it."""
    body = pickle.dumps(message)
    return struct.pack("!i", len(body)) + body


def test_ping_measures_a_round_trip(pair: tuple[Endpoint, Endpoint]) -> None:
    """ping returns the round trip in seconds."""
    left, _ = pair
    assert left.ping(timeout=WAIT) >= 0


def test_timeouts_beyond_what_a_lock_can_wait_mean_no_limit(pair: tuple[Endpoint, Endpoint]) -> None:
    """An infinite or enormous timeout waits without limit instead of overflowing."""
    left, _ = pair
    assert left.call("echo", 1, timeout=float("inf")) == 1
    assert left.call("echo", 2, timeout=1e300) == 2

    async def main() -> Any:
        return await left.acall("echo", 3, timeout=1e300)

    assert asyncio.run(main()) == 3


def test_wait_peer_returns_the_hello(pair: tuple[Endpoint, Endpoint]) -> None:
    """Each endpoint greets the other first thing."""
    left, right = pair
    assert left.wait_peer(WAIT).name == "right"
    assert right.wait_peer(WAIT).name == "left"


def test_async_method_of_the_served_object_is_awaited(pair: tuple[Endpoint, Endpoint]) -> None:
    """A coroutine method is run to completion and its value returned."""
    left, _ = pair
    assert left.call("later", 4) == 4


def test_unknown_message_type_is_ignored(raw_peer: tuple[Connection, Endpoint]) -> None:
    """A type the endpoint does not know is dropped silently, as BOSS does."""
    raw, endpoint = raw_peer
    raw.send({"id": 1, "type": "batch", "items": []})
    raw.send(Call(id=2, method="echo", args=(5,)).to_wire())
    assert _receive_reply(raw, 2) == {"id": 2, "type": "r", "payload": 5}
    assert not endpoint.is_closed


def test_malformed_request_is_answered_with_protocol_error(raw_peer: tuple[Connection, Endpoint]) -> None:
    """A request with a usable id but a bad field gets an error reply naming the field."""
    raw, _ = raw_peer
    raw.send({"id": 3, "type": "c", "method": 7, "args": (), "kwargs": {}})
    reply = _receive_reply(raw, 3)
    assert reply["type"] == "e"
    assert isinstance(reply["error"], ProtocolError)
    assert "'method' must be a str" in str(reply["error"])


def test_malformed_reply_fails_its_call_with_protocol_error(raw_peer: tuple[Connection, Endpoint]) -> None:
    """A reply that breaks the format fails the call it answers instead of leaving it to time out."""
    raw, endpoint = raw_peer
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        calling = pool.submit(endpoint.call, "anything", timeout=WAIT)
        request = _receive(raw)
        raw.send({"id": request["id"], "type": "e", "error": "not an exception"})
        with pytest.raises(ProtocolError, match="malformed reply to call 'anything'"):
            calling.result(WAIT)


def test_garbage_bytes_are_survived(raw_peer: tuple[Connection, Endpoint]) -> None:
    """Bytes that are no pickle are logged and dropped; the endpoint keeps serving."""
    raw, _ = raw_peer
    raw.send_bytes(b"\x00not a pickle")
    raw.send_bytes(pickle.dumps(["a", "list"]))
    raw.send(Call(id=4, method="echo", args=("ok",)).to_wire())
    assert _receive_reply(raw, 4)["payload"] == "ok"


def test_unacknowledged_set_gets_no_reply(raw_peer: tuple[Connection, Endpoint]) -> None:
    """A BOSS-style set (no ack) is applied and not answered."""
    raw, _ = raw_peer
    raw.send({"id": 5, "type": "s", "name": "value", "value": 9})
    raw.send({"id": 6, "type": "g", "name": "value"})
    assert _receive(raw) == {"id": 6, "type": "r", "payload": 9}


def test_peer_that_stops_reading_cannot_block_a_caller_past_its_timeout() -> None:
    """A call to a peer that reads nothing times out on time; the stuck write then breaks the channel."""
    ours, theirs = Pipe()
    endpoint = Endpoint(theirs, name="stuck", send_timeout=0.5)
    try:
        with pytest.raises(CallTimeout):
            endpoint.call("echo", b"x" * 20_000_000, timeout=0.2)
        assert endpoint.closed.wait(WAIT)
        with pytest.raises(SidecarCrashed, match="channel broken while sending"):
            endpoint.call("echo", 1)
    finally:
        endpoint.close()
        ours.close()


def test_one_way_sends_to_a_peer_that_stops_reading_stop_at_the_backlog_limit() -> None:
    """notify() cannot queue without bound: past max_backlog_bytes it waits, then fails, memory stays bounded."""
    ours, theirs = Pipe()
    limit, chunk = 4_000_000, b"x" * 1_000_000
    endpoint = Endpoint(theirs, name="flooded", send_timeout=0.5, max_backlog_bytes=limit)
    most = 0
    try:
        with pytest.raises(SidecarError):
            for _ in range(1000):
                endpoint.notify("sink", chunk)
                most = max(most, endpoint._writer._backlog)
        assert most <= limit + 2 * len(chunk)
    finally:
        endpoint.close()
        ours.close()


def test_stop_request_runs_the_handler_and_is_acknowledged() -> None:
    """request_stop returns once the peer's on_stop handler ran."""
    left_end, right_end = Pipe()
    reasons: list[str] = []
    left = Endpoint(left_end, name="left")
    right = Endpoint(right_end, name="right", on_stop=reasons.append)
    try:
        left.request_stop("enough", timeout=WAIT)
        assert reasons == ["enough"]
        assert right.stop_acknowledged.wait(WAIT)
    finally:
        left.close()
        right.close()


def test_stop_request_is_refused_without_a_handler(pair: tuple[Endpoint, Endpoint]) -> None:
    """An endpoint without on_stop answers a stop request with an error."""
    left, _ = pair
    with pytest.raises(SidecarError, match="does not accept stop requests"):
        left.request_stop(timeout=WAIT)


def test_on_close_runs_once_when_the_peer_goes_away() -> None:
    """The peer closing its end fails nothing pending and calls on_close once with SidecarCrashed."""
    left_end, right_end = Pipe()
    seen: list[SidecarError] = []
    left = Endpoint(left_end, name="left", on_close=seen.append)
    right = Endpoint(right_end, name="right")
    right.close()
    assert left.closed.wait(WAIT)
    left.close()
    assert len(seen) == 1
    assert isinstance(seen[0], SidecarCrashed)


def test_endpoint_without_target_refuses_calls(pair: tuple[Endpoint, Endpoint]) -> None:
    """An endpoint that serves nothing answers every call with AttributeError."""
    ours, theirs = Pipe()
    caller = Endpoint(ours, name="caller")
    silent = Endpoint(theirs, name="silent")
    try:
        with pytest.raises(AttributeError, match="serves no object"):
            caller.call("echo", 1, timeout=WAIT)
    finally:
        caller.close()
        silent.close()


def test_remote_timeout_error_is_not_mistaken_for_our_timeout(pair: tuple[Endpoint, Endpoint]) -> None:
    """A TimeoutError raised by the served method arrives as itself, not as CallTimeout."""
    left, right = pair
    right._server._target = _RaisesTimeout()
    with pytest.raises(TimeoutError, match="remote") as caught:
        left.call("wait", timeout=WAIT)
    assert not isinstance(caught.value, CallTimeout)


class _RaisesTimeout:
    def wait(self) -> None:
        raise TimeoutError("remote")


def test_ids_of_our_requests_are_unique() -> None:
    """Ids never repeat within a process, so replies cannot be misrouted."""
    assert len({new_id() for _ in range(1000)}) == 1000
