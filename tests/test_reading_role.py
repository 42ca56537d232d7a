"""The reading role: named states, each transition guarded and logged at debug level, and the ways real
endpoints move through them (a caller reads its reply, the standby reads what no one waits for, the
worker's reader runs a call and takes the role back, the channel's end)."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from multiprocessing import Pipe
from typing import Any

import pytest

from boss_sidecar._role import READERS, TRANSITIONS, InvalidReadingTransition, Reading, ReadingRole
from boss_sidecar._standby import _Standby
from boss_sidecar.rpc import Endpoint

R = Reading
WAIT = 30.0  # the bound on every wait here; a passing run takes a small fraction of it
LOGGER = "boss_sidecar.rpc.reading"


def _role_in(state: Reading) -> ReadingRole:
    """A role brought to ``state`` by the transitions the endpoint uses."""
    role = ReadingRole("test")  # starts HANDED
    if state is R.ENDED:
        role.end()
    elif state is not R.HANDED:
        role.set_down()
        if state in READERS:
            assert role.take(state)
    assert role.state is state
    return role


def _move(role: ReadingRole, new: Reading) -> None:
    """Ask ``role`` for ``new`` the way the endpoint would from its current state."""
    if new is R.FREE:
        role.set_down()
    elif new is R.HANDED:
        role.hand()
    elif new is R.ENDED:
        role.end()
    elif role.state is R.FREE:
        assert role.take(new)
    else:
        role.take_up(new)


ALLOWED = [(old, new) for old, targets in TRANSITIONS.items() for new in targets]
REFUSED = [(old, new) for old in R for new in R if new not in TRANSITIONS[old] and old is not R.FREE]


@pytest.mark.parametrize(("old", "new"), ALLOWED, ids=[f"{old}-{new}" for old, new in ALLOWED])
def test_each_allowed_transition_changes_the_state_and_is_logged_at_debug(
    caplog: pytest.LogCaptureFixture, old: Reading, new: Reading
) -> None:
    """Every transition of the table moves the role, names the thread that reads now, and logs old and new."""
    role = _role_in(old)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    _move(role, new)
    assert role.state is new
    assert (role.thread is threading.current_thread()) is (new in READERS)
    [record] = [record for record in caplog.records if record.name == LOGGER]
    assert record.levelno == logging.DEBUG
    assert (getattr(record, "old", None), getattr(record, "new", None)) == (str(old), str(new))
    assert f"{old} -> {new}" in record.getMessage()


@pytest.mark.parametrize(("old", "new"), REFUSED, ids=[f"{old}-{new}" for old, new in REFUSED])
def test_each_transition_the_table_lacks_is_refused_and_changes_nothing(old: Reading, new: Reading) -> None:
    """A change the table does not allow raises naming both states and leaves the role as it was."""
    role = _role_in(old)
    with pytest.raises(InvalidReadingTransition, match=f"from {old} to {new}"):
        _move(role, new)
    assert role.state is old


def test_free_is_left_only_by_taking_and_taking_up_needs_a_hand() -> None:
    """The role is taken, not taken up, when free: take_up there would read without holding it."""
    role = _role_in(R.FREE)
    with pytest.raises(InvalidReadingTransition, match="only a role handed on is taken up"):
        role.take_up(R.READER)
    assert role.state is R.FREE


def test_only_one_thread_takes_the_role_and_the_others_are_told_at_once() -> None:
    """A second thread that tries to take the role held by another gets False at once and changes nothing."""
    role = _role_in(R.FREE)
    assert role.take(R.CALLER)
    seen: list[bool] = []
    other = threading.Thread(target=lambda: seen.append(role.take(R.STANDBY)))
    other.start()
    other.join(WAIT)
    assert seen == [False]
    assert (role.state, role.thread) == (R.CALLER, threading.current_thread())
    role.set_down()
    assert role.take(R.STANDBY)


# ----------------------------------------------------------------- the transitions real endpoints make
class _Served:
    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.events: list[Any] = []
        self.seen = threading.Event()

    def echo(self, value: Any) -> Any:
        return value

    def wait(self) -> bool:
        self.entered.set()
        return self.release.wait(WAIT)

    def note(self, value: Any) -> None:
        self.events.append(value)
        self.seen.set()


@pytest.fixture
def pair() -> Iterator[tuple[Endpoint, Endpoint, _Served]]:
    """A calling side (defaults) and a serving side that reads as the worker does, on an in-process pipe."""
    served = _Served()
    ours, theirs = Pipe()
    caller = Endpoint(ours, _Served(), name="caller", callers_read=True)
    server = Endpoint(theirs, served, name="server", callers_read=False)
    try:
        caller.wait_peer(WAIT)
        server.wait_peer(WAIT)
        yield caller, server, served
    finally:
        served.release.set()
        caller.close()
        server.close()


def _changes(caplog: pytest.LogCaptureFixture, endpoint: str) -> list[tuple[str, str]]:
    return [
        (getattr(record, "old", ""), getattr(record, "new", ""))  # fields the role logs as ``extra``
        for record in caplog.records
        if record.name == LOGGER and getattr(record, "endpoint", None) == endpoint
    ]


pytestmark = pytest.mark.skipif(not _Standby.SUPPORTED, reason="the standby needs epoll and eventfd (Linux)")


def test_a_sync_caller_takes_the_free_role_reads_its_reply_and_sets_it_down(
    pair: tuple[Endpoint, Endpoint, _Served], caplog: pytest.LogCaptureFixture
) -> None:
    """The calling side: free between messages; the caller reads its own reply."""
    caller, _server, _served = pair
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    assert caller.call("echo", 1, timeout=WAIT) == 1
    assert ("free", "caller") in _changes(caplog, "caller")
    assert _changes(caplog, "caller")[-1][1] == "free"


def test_an_event_no_caller_waits_for_is_read_by_the_standby(
    pair: tuple[Endpoint, Endpoint, _Served], caplog: pytest.LogCaptureFixture
) -> None:
    """What arrives while no caller reads wakes the standby, which takes the role, reads and sets it down."""
    caller, server, _served = pair
    target = caller._server._target
    assert isinstance(target, _Served)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server.notify("note", "hello")
    assert target.seen.wait(WAIT)
    caller.call("echo", 0, timeout=WAIT)  # the standby set the role down before the caller could take it
    changes = _changes(caplog, "caller")
    assert changes[:2] == [("free", "standby"), ("standby", "free")]


def test_work_a_caller_reads_goes_with_the_role_to_the_standby(
    pair: tuple[Endpoint, Endpoint, _Served], caplog: pytest.LogCaptureFixture
) -> None:
    """A caller that reads an event besides its reply hands the role on (HANDED) to the standby, which runs
    it off the caller's thread and sets the role down."""
    caller, server, _served = pair
    target = caller._server._target
    assert isinstance(target, _Served)
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    class Chatty:
        def echo_after_event(self, value: Any) -> Any:
            server.notify("note", value)  # sent before the reply, on the same channel
            return value

    server._server._target = Chatty()
    assert caller.call("echo_after_event", 5, timeout=WAIT) == 5
    assert target.seen.wait(WAIT)
    changes = _changes(caplog, "caller")
    assert ("caller", "handed") in changes or ("free", "standby") in changes  # the event may come alone first
    if ("caller", "handed") in changes:
        assert changes[changes.index(("caller", "handed")) + 1] == ("handed", "standby")


def test_the_servers_reader_sets_the_role_down_for_a_call_and_takes_it_back(
    pair: tuple[Endpoint, Endpoint, _Served], caplog: pytest.LogCaptureFixture
) -> None:
    """The serving side: the reader runs a quick call itself with the role free, then takes it back."""
    caller, _server, _served = pair
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    assert caller.call("echo", 2, timeout=WAIT) == 2
    changes = _changes(caplog, "server")
    assert ("reader", "free") in changes
    assert ("free", "reader") in changes or ("free", "standby") in changes


def test_a_message_during_a_slow_call_makes_the_standby_hand_the_reading_to_another_reader(
    pair: tuple[Endpoint, Endpoint, _Served], caplog: pytest.LogCaptureFixture
) -> None:
    """While the reader runs a slow call, a ping wakes the standby: it takes the role and hands it to a pool
    thread (HANDED, then READER), which answers the ping."""
    caller, _server, served = pair
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    waiting = threading.Thread(target=lambda: caller.call("wait", timeout=WAIT))
    waiting.start()
    try:
        assert served.entered.wait(WAIT)
        assert caller.ping(timeout=WAIT) >= 0
    finally:
        served.release.set()
        waiting.join(WAIT)
    changes = _changes(caplog, "server")
    assert ("free", "standby") in changes
    after = changes[changes.index(("free", "standby")) :]
    assert ("standby", "handed") in after
    assert ("handed", "reader") in after


def test_the_channel_end_ends_the_role_for_good(
    pair: tuple[Endpoint, Endpoint, _Served], caplog: pytest.LogCaptureFixture
) -> None:
    """The reader that sees the channel end moves the role to ENDED; nothing takes it after."""
    caller, server, _served = pair
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    caller.close()
    assert server.closed.wait(WAIT)
    server.close()
    assert _changes(caplog, "server")[-1][1] == "ended"
    assert server._role.state is R.ENDED
    assert not server._role.take(R.CALLER)


def test_an_endpoint_built_with_a_target_and_default_arguments_reads_as_the_serving_side(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``Endpoint(connection, target)`` as a BOSS user builds it: a reader takes the role at start and runs the
    calls it reads (no flag needed); without a target the endpoint reads as the calling side."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    ours, theirs = Pipe()
    server = Endpoint(theirs, _Served(), name="plain-server")
    client = Endpoint(ours, name="plain-client")
    try:
        assert client.call("echo", 3, timeout=WAIT) == 3
    finally:
        client.close()
        server.close()
    assert _changes(caplog, "plain-server")[0] == ("handed", "reader")
    assert _changes(caplog, "plain-client")[0] == ("handed", "free")


def test_a_take_cut_short_by_an_interrupt_leaves_the_role_to_give_back() -> None:
    """Ctrl-C as the claim is taken, before the state says so: no one else can take the role, and the
    interrupted thread finds it still its own and gives it back, free for the next taker."""
    role = _role_in(R.FREE)

    def interrupt_as_claimed(_frame: Any, event: str, arg: Any) -> None:
        if event == "c_return" and getattr(arg, "__name__", "") == "setdefault":
            raise KeyboardInterrupt  # where a signal handler would run: as the claim's call returns

    sys.setprofile(interrupt_as_claimed)
    try:
        with pytest.raises(KeyboardInterrupt):
            role.take(R.CALLER)
    finally:
        sys.setprofile(None)
    assert role.state is R.FREE
    taken_elsewhere: list[bool] = []
    other = threading.Thread(target=lambda: taken_elsewhere.append(role.take(R.STANDBY)))
    other.start()
    other.join(WAIT)
    assert taken_elsewhere == [False]
    assert role.give_back()
    assert role.take(R.CALLER)
    assert (role.state, role.thread) == (R.CALLER, threading.current_thread())
