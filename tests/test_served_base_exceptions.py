"""Endpoint: a served call that raises any BaseException (SystemExit, KeyboardInterrupt, GeneratorExit, a
cancelled coroutine) answers its caller at once with an error naming it, leaves no running call
behind, and the serving side goes on serving. The same in a real worker: tests/test_faults_hangs.py."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from multiprocessing import Pipe
from typing import Any

import pytest

from boss_sidecar.errors import RemoteError, SidecarUnavailable
from boss_sidecar.rpc import Endpoint

WAIT = 30.0  # the bound on every wait here; the old code waited all of it and then timed out


class Vendor:
    """A served object whose methods end as vendor code may."""

    def exit(self, code: int) -> None:
        sys.exit(code)

    def interrupt(self) -> None:
        raise KeyboardInterrupt

    def generator_exit(self) -> None:
        raise GeneratorExit

    async def cancelled(self) -> None:
        raise asyncio.CancelledError

    def echo(self, value: Any) -> Any:
        return value


RAISED = [
    ("exit", (3,), "SystemExit"),
    ("interrupt", (), "KeyboardInterrupt"),
    ("generator_exit", (), "GeneratorExit"),
    ("cancelled", (), "CancelledError"),
]


@pytest.fixture(params=[False, True], ids=["worker-side", "defaults"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[Endpoint, Endpoint]]:
    """A caller and a server on an in-process pipe; the server reads as the worker does, or with defaults."""
    ours, theirs = Pipe()
    server = Endpoint(theirs, Vendor(), name="server", callers_read=None if request.param else False)
    caller = Endpoint(ours, name="caller")
    try:
        yield caller, server
    finally:
        caller.close()
        server.close()


@pytest.mark.parametrize(("method", "args", "named"), RAISED)
def test_a_call_raising_a_base_exception_answers_with_an_error_naming_it(
    pair: tuple[Endpoint, Endpoint], method: str, args: tuple[Any, ...], named: str
) -> None:
    """The caller gets a RemoteError naming the exception (never the exception itself, which would end
    its own thread), the call leaves the server's running calls, and the server serves the next call."""
    caller, server = pair
    with pytest.raises(RemoteError, match=named) as raised:
        caller.call(method, *args, timeout=WAIT)
    assert raised.value.type_name.endswith(named)
    assert server.running_count == 0
    assert server.overdue() == []
    assert caller.call("echo", 5, timeout=WAIT) == 5


def test_calls_raising_base_exceptions_together_each_answer(pair: tuple[Endpoint, Endpoint]) -> None:
    """Many at once (read together, run as a batch or in the pool) each get their own answer."""
    caller, server = pair
    results: list[BaseException | None] = [None] * 16

    def one(index: int) -> None:
        try:
            caller.call("exit", index, timeout=WAIT)
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=one, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert all(
        isinstance(result, RemoteError) and f"SystemExit({index})" in str(result)
        for index, result in enumerate(results)
    )
    assert server.running_count == 0


def test_an_async_caller_gets_the_error_and_its_loop_runs_on(pair: tuple[Endpoint, Endpoint]) -> None:
    """Awaited, the call raises the RemoteError in the task; the loop is not ended by a SystemExit."""
    caller, _server = pair

    async def main() -> Any:
        with pytest.raises(RemoteError, match="SystemExit"):
            await caller.acall("exit", 1, timeout=WAIT)
        return await caller.acall("echo", "on", timeout=WAIT)

    assert asyncio.run(main()) == "on"


def test_an_event_handler_raising_system_exit_leaves_the_reader_reading(pair: tuple[Endpoint, Endpoint]) -> None:
    """A one-way event whose handler exits is logged there; the calls after it are served."""
    caller, _server = pair
    caller.notify("exit", 2)
    assert caller.call("echo", "after", timeout=WAIT) == "after"


def test_served_on_an_event_loop_a_system_exit_answers_and_the_loop_serves_on() -> None:
    """With ``loop`` (BOSS's semantics), the error reaches the caller and the serving loop keeps running."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    ours, theirs = Pipe()
    server = Endpoint(theirs, Vendor(), name="server", loop=loop)
    caller = Endpoint(ours, name="caller")
    try:
        for method, args, named in RAISED[:3]:
            with pytest.raises(RemoteError, match=named):
                caller.call(method, *args, timeout=WAIT)
        with pytest.raises(SidecarUnavailable, match="'cancelled' was cancelled"):  # a task cancelled on the loop
            caller.call("cancelled", timeout=WAIT)
        assert caller.call("echo", 7, timeout=WAIT) == 7
        assert server.running_count == 0
    finally:
        caller.close()
        server.close()
        loop.call_soon_threadsafe(loop.stop)
        runner.join(WAIT)
        loop.close()
