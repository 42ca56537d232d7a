"""BOSS compatibility: our classes talk to heros-boss's real ``MultiprocessRPC`` and answer in its format.

The BOSS side runs in a spawned child (``peers/boss_peer.py``, a fresh interpreter on an asyncio
loop, like ``boss/worker.py``); importing ``boss`` here would load zenoh into the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

import pytest

from boss_sidecar.compat import POLLING_INTERVAL, MultiprocessRPC
from boss_sidecar.errors import CallTimeout
from boss_sidecar.rpc import Endpoint
from peers import EXIT_TIMEOUT, spawned

WAIT = 30.0  # the bound on every wait here; passing runs take a small fraction of it
SILENCE = 0.5  # how long we give a BOSS peer to not answer something it never answers

# The fields BOSS's message classes read from each type it parses (boss/multiprocess.py).
BOSS_FIELDS = {"r": {"id", "type", "payload"}, "e": {"id", "type", "error"}}


class Api:
    """What our side serves, whether through the compat class or a plain Endpoint."""

    color = "blue"

    def double(self, value: int) -> int:
        return 2 * value

    def echo(self, value: Any) -> Any:
        return value

    def fail(self, message: str) -> None:
        raise ValueError(message)


class OurSide(Api, MultiprocessRPC):
    """Our drop-in, as BOSS code would subclass it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pipe: Connection) -> None:
        self.reports: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        super().__init__(loop, pipe)

    def report(self, what: str, value: Any) -> None:
        self.reports.put_nowait((what, value))


async def _within(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, WAIT)


@pytest.fixture
async def ours() -> AsyncIterator[OurSide]:
    """Our compat class on this test's loop, facing a real BOSS peer in a child process."""
    with spawned("boss_peer.py") as (connection, process):
        side = OurSide(asyncio.get_running_loop(), connection)
        try:
            yield side
            await _within(side._rpc("stop"))  # BOSS answers, then its loop ends
            assert await asyncio.to_thread(process.wait, EXIT_TIMEOUT) == 0
        finally:
            side._rpc_stop()


# ----------------------------------------------------------------- our compat class -> BOSS


async def test_our_rpc_calls_a_boss_method_and_runs_the_callback(ours: OurSide) -> None:
    """``_rpc(method, *args, _cb=...)`` runs BOSS's method; the callback gets the result on our loop."""
    seen: list[Any] = []
    assert await _within(ours._rpc("add", 2, 3, _cb=seen.append)) == 5
    assert seen == [5]


async def test_our_get_attribute_stores_under_local_name(ours: OurSide) -> None:
    """``_get_attribute(name, local_name)`` reads BOSS's attribute into ``self.<local_name>``."""
    await _within(ours._get_attribute("value", "boss_value"))
    assert ours.boss_value == 1  # type: ignore[attr-defined]


async def test_our_set_attribute_reaches_boss(ours: OurSide) -> None:
    """``_set_attribute`` writes BOSS's attribute (one-way, as in BOSS)."""
    ours._set_attribute("value", 9)
    await _within(ours._get_attribute("value", "boss_value"))
    assert ours.boss_value == 9  # type: ignore[attr-defined]


# ----------------------------------------------------------------- BOSS -> our compat class


async def test_boss_rpc_with_callback_calls_our_method(ours: OurSide) -> None:
    """BOSS's ``_rpc(..., _cb=...)`` reaches our method and its callback gets our result."""
    await _within(ours._rpc("ask", "double", 21))
    assert await _within(ours.reports.get()) == ("double", 42)


async def test_boss_get_attribute_with_local_name_reads_ours(ours: OurSide) -> None:
    """BOSS's ``_get_attribute(name, local_name)`` gets our attribute's value."""
    await _within(ours._rpc("fetch", "color", "their_color"))
    assert await _within(ours.reports.get()) == ("their_color", "blue")


async def test_boss_set_attribute_writes_ours(ours: OurSide) -> None:
    """BOSS's ``_set_attribute`` writes our attribute before its next answer reaches us."""
    await _within(ours._rpc("push", "color", "red"))
    assert ours.color == "red"


async def test_boss_reading_a_name_we_refuse_gets_silence_and_keeps_working(ours: OurSide) -> None:
    """Like BOSS itself, we do not answer a read we cannot serve: an error reply would kill BOSS's loop."""
    await _within(ours._rpc("fetch", "_private", "their_private"))
    assert await _within(ours.reports.get()) == ("their_private", "<none>")
    assert await _within(ours._rpc("add", 1, 1)) == 2


async def test_rpc_stop_ends_the_communication_task() -> None:
    """``_rpc_stop`` ends ``_communicatation_task`` and ``_communicate``; calling it twice is fine."""
    left, right = Pipe()
    side = OurSide(asyncio.get_running_loop(), left)
    try:
        communicating = asyncio.ensure_future(side._communicate())
        side._rpc_stop()
        side._rpc_stop()
        await _within(asyncio.shield(side._communicatation_task))
        await _within(communicating)
    finally:
        right.close()


async def test_peer_hanging_up_ends_the_communication_task() -> None:
    """When the other end closes, the task BOSS code waits on ends instead of spinning forever."""
    left, right = Pipe()
    side = OurSide(asyncio.get_running_loop(), left)
    right.close()
    await _within(asyncio.shield(side._communicatation_task))
    side._rpc_stop()


def test_polling_interval_is_importable() -> None:
    """Code that reads BOSS's POLLING_INTERVAL keeps working; nothing here polls."""
    assert POLLING_INTERVAL == 0.01


# ----------------------------------------------------------------- plain Endpoint <-> BOSS


class Target:
    """What a plain Endpoint serves to the BOSS peer."""

    def __init__(self) -> None:
        self.reported = threading.Event()
        self.report_args: tuple[Any, ...] = ()

    def double(self, value: int) -> int:
        return 2 * value

    def echo(self, value: Any) -> Any:
        return value

    def report(self, *args: Any) -> None:
        self.report_args = args
        self.reported.set()


@contextlib.contextmanager
def _endpoint_facing_boss() -> Iterator[tuple[Endpoint, Target]]:
    with spawned("boss_peer.py") as (connection, process):
        target = Target()
        endpoint = Endpoint(connection, target, name="facing-boss")
        try:
            yield endpoint, target
            endpoint.call("stop", timeout=WAIT)
            assert process.wait(EXIT_TIMEOUT) == 0
        finally:
            endpoint.close()


def test_endpoint_calls_boss_methods_and_attributes() -> None:
    """Endpoint.call, get_attribute and set_attribute_nowait work against BOSS."""
    with _endpoint_facing_boss() as (endpoint, _):
        assert endpoint.call("add", 2, 3, timeout=WAIT) == 5
        assert endpoint.get_attribute("value", timeout=WAIT) == 1
        endpoint.set_attribute_nowait("value", 4)
        assert endpoint.get_attribute("value", timeout=WAIT) == 4


def test_boss_rpc_reaches_the_endpoint_target() -> None:
    """BOSS's ``_rpc`` with a callback calls the Endpoint's target and gets its result."""
    with _endpoint_facing_boss() as (endpoint, target):
        endpoint.call("ask", "double", 21, timeout=WAIT)
        assert target.reported.wait(WAIT)
        assert target.report_args == ("double", 42)


def test_boss_answers_neither_acknowledged_sets_nor_reads_of_missing_attributes() -> None:
    """BOSS's own silences end in CallTimeout, not a hang; the channel stays usable."""
    with _endpoint_facing_boss() as (endpoint, _):
        with pytest.raises(CallTimeout):
            endpoint.set_attribute("value", 5, timeout=SILENCE)
        with pytest.raises(CallTimeout):
            endpoint.get_attribute("no_such_attribute", timeout=SILENCE)
        assert endpoint.get_attribute("value", timeout=WAIT) == 5


# ----------------------------------------------------------------- what our replies look like


def _receive(connection: Connection) -> dict[str, Any]:
    assert connection.poll(WAIT), "no reply arrived"
    message = connection.recv()
    assert isinstance(message, dict)
    return message


def _boss_call(message_id: int, method: str, *args: Any) -> dict[str, Any]:
    """A call exactly as BOSS encodes one (its own field order, args as a tuple)."""
    return {"method": method, "args": args, "kwargs": {}, "id": message_id, "type": "c"}


def _replies(raw: Connection, requests: list[dict[str, Any]], expected: set[int]) -> dict[int, dict[str, Any]]:
    """Send ``requests``; collect replies until every id in ``expected`` has one.

    Calls may be answered in any order (they run in a pool), but the set (5) and the read after it
    (6) are handled in arrival order, so a reply to the set would come before the read's.
    """
    for request in requests:
        raw.send(request)
    replies: dict[int, dict[str, Any]] = {}
    while not expected <= set(replies):
        reply = _receive(raw)
        if reply.get("type") != "hello":
            replies[reply["id"]] = reply
    return replies


REQUESTS = [
    _boss_call(1, "double", 4),
    _boss_call(2, "fail", "boom"),
    _boss_call(3, "_private"),
    {"name": "color", "id": 4, "type": "g"},
    {"name": "color", "value": "green", "id": 5, "type": "s"},
    {"name": "color", "id": 6, "type": "g"},
]


ANSWERED = {1, 2, 3, 4, 6}  # a set gets no reply, as in BOSS


def _check_boss_readable(replies: dict[int, dict[str, Any]]) -> None:
    assert set(replies) == ANSWERED
    for reply in replies.values():
        assert BOSS_FIELDS[reply["type"]] <= set(reply), reply
    assert replies[1]["payload"] == 8
    assert isinstance(replies[2]["error"], ValueError)
    assert isinstance(replies[3]["error"], AttributeError)
    assert replies[4]["payload"] == "blue"
    assert replies[6]["payload"] == "green"


def test_endpoint_replies_carry_every_field_boss_reads() -> None:
    """Results and errors from an Endpoint have every field BOSS reads (it raises KeyError otherwise)."""
    raw, theirs = Pipe()
    endpoint = Endpoint(theirs, Api(), name="served")
    try:
        _check_boss_readable(_replies(raw, REQUESTS, ANSWERED))
    finally:
        endpoint.close()
        raw.close()


async def test_compat_replies_carry_every_field_boss_reads() -> None:
    """The same holds for our compat class, whose served requests run on its loop."""
    raw, theirs = Pipe()
    side = OurSide(asyncio.get_running_loop(), theirs)
    try:
        replies = await asyncio.wait_for(asyncio.to_thread(_replies, raw, REQUESTS, ANSWERED), WAIT)
        _check_boss_readable(replies)
    finally:
        side._rpc_stop()
        raw.close()
