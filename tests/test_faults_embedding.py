"""Faults of a library embedded in a host: output the host did not ask for, a full put buffer
under asyncio, async operations cancelled half-way. Real host processes and real workers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from boss_sidecar import AsyncHostedObject, adrop
from peers.boss_support import hero_environment
from peers.sidecar_support import BOUND, run_program

CENSUS = "peers.sidecar_objects:Census"
T = TypeVar("T")


async def bounded(awaitable: Awaitable[T]) -> T:
    """Every wait in these tests has a bound (a hang fails the test instead of stalling it)."""
    return await asyncio.wait_for(awaitable, BOUND)


def test_a_host_that_configures_no_logging_sees_nothing_on_stdout_or_stderr() -> None:
    """Start, host, warnings provoked in host and worker, stop: not one byte on stdout or stderr."""
    done = run_program("logging_host.py", "none")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_a_service_building_its_boss_in_python_with_no_logging_sees_nothing() -> None:
    """``boss_sidecar.boss.BOSS``: one HERO built in its worker, one that fails to build, close: not one byte."""
    done = run_program("logging_boss_host.py", "none", env=hero_environment())
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


async def test_a_put_into_a_full_buffer_is_awaited_while_the_loop_runs_on(make_async: Any) -> None:
    """The worker frozen, puts pile up to ``put_buffer``; the next put waits for room without holding
    the loop; once the worker runs again it completes and ``flush`` sees every put through."""
    sidecar = await make_async(put_buffer=4, heartbeat_timeout=60.0, call_timeout=60.0)
    pid = sidecar.pid
    assert pid is not None
    big = b"x" * (8 * 1024 * 1024)  # the channel's 64 MiB backlog fills, then the buffer
    os.kill(pid, signal.SIGSTOP)
    try:
        while sidecar.queued_puts < 4:
            await bounded(sidecar.put("async/big", big))
        waiting = asyncio.create_task(sidecar.put("async/big", big))
        await asyncio.sleep(0)  # one turn of the loop: the put has started
        await asyncio.sleep(0)
        assert not waiting.done()  # it waits for room, and the loop still runs this test
    finally:
        os.kill(pid, signal.SIGCONT)
    await bounded(waiting)
    await bounded(sidecar.flush())
    assert sidecar.pid == pid


async def test_cancelled_operations_leave_nothing_declared_and_no_task_pending(make_async: Any) -> None:
    """subscribe, queryable, token and host, cancelled (once or twice) at every step of their way: none stays
    declared or hosted (not even after a restart), no callback fires, no task is left pending."""
    sidecar = await make_async()
    fired: list[str] = []
    this = asyncio.current_task()
    handles: list[Any] = []
    operations: list[Callable[[], Awaitable[Any]]] = [
        lambda: sidecar.subscribe("cancel/k", lambda sample: fired.append(sample.key_expr)),
        lambda: sidecar.queryable("cancel/k", lambda query: fired.append(query.selector)),
        lambda: sidecar.liveliness_token("cancel/alive"),
        lambda: sidecar.host(CENSUS),
    ]
    for operation in operations:
        for turns, twice in itertools.product(range(8), (False, True)):
            task = asyncio.ensure_future(operation())
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            if twice:  # cancelled again while it undoes itself: the undoing goes on
                await asyncio.sleep(0)
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                handles.append(await bounded(task))  # it finished before the cancel came
    for handle in handles:  # what finished is the caller's to close, as always
        if isinstance(handle, AsyncHostedObject):
            await adrop(handle)
        else:
            await asyncio.to_thread(handle.close)
    others = [task for task in asyncio.all_tasks() if task is not this]
    if others:
        await bounded(asyncio.wait(others))
    assert [task for task in asyncio.all_tasks() if task is not this] == []

    probe = await sidecar.subscribe("cancel/k")
    census = await sidecar.host(CENSUS)
    await sidecar.restart()  # a ledger with leftovers would declare and host them again here
    assert await census.count() == 1
    assert await sidecar.liveliness_get("cancel/**", timeout=2) == []
    await sidecar.put("cancel/k", b"1")
    assert (await bounded(probe.__aiter__().__anext__())).payload == b"1"
    assert await sidecar.get("cancel/k", timeout=2) == []
    assert fired == []
