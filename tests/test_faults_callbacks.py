"""User callbacks that never return: stop() keeps its deadline, backlogs stay bounded, health() says so."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable

from boss_sidecar import AsyncSidecar, Sample, Sidecar, SidecarState
from boss_sidecar.testing import peer_config, wait_until
from peers.fault_support import BOUND, worker_gone
from peers.sidecar_support import HERE, child_environment, ok_line

MakeSidecar = Callable[..., Sidecar]
STUCK = 25
"""Callbacks blocked at once: before, stop() waited a second for each (longer than BOUND in all)."""
BACKLOG = 10
MORE = 40


def test_stuck_callbacks_are_shown_their_backlog_bounded_and_stop_keeps_its_deadline(
    make_sidecar: MakeSidecar,
) -> None:
    """25 callbacks blocked forever and an iterator nobody reads: health() lists the stuck callbacks,
    samples beyond the backlog bound are dropped and counted, and stop() returns (within its deadline)
    while the callbacks are still blocked."""
    sidecar = make_sidecar("stuck", subscription_backlog=BACKLOG, stuck_callback_after=0.2, stop_timeout=1.0)
    release = threading.Event()
    entered = threading.Semaphore(0)

    def block(_sample: Sample) -> None:
        entered.release()
        release.wait(BOUND * 3)

    try:
        for _ in range(STUCK):
            sidecar.subscribe("stuck/k", block)
        sidecar.subscribe("stuck/k")  # an iterator nobody reads
        sidecar.put("stuck/k", "first")
        sidecar.flush()
        for _ in range(STUCK):
            assert entered.acquire(timeout=BOUND)
        stuck = wait_until(lambda: sidecar.health().stuck_callbacks, BOUND, "stuck callbacks in health()")
        wait_until(lambda: len(sidecar.health().stuck_callbacks) == STUCK, BOUND, "all stuck callbacks")
        assert all("stuck:stuck/k" in why for why in stuck)
        for number in range(MORE):
            sidecar.put("stuck/k", str(number))
        sidecar.flush()
        dropped = (STUCK + 1) * (1 + MORE - BACKLOG)  # each subscription keeps BACKLOG of its 1 + MORE
        wait_until(lambda: sidecar.health().dropped_samples == dropped, BOUND, f"{dropped} dropped samples")
        stopper = threading.Thread(target=sidecar.stop, daemon=True)
        stopper.start()
        stopper.join(BOUND)
        assert not stopper.is_alive(), "stop() waited for stuck callbacks"
        assert sidecar.state == SidecarState.STOPPED
    finally:
        release.set()


def test_async_subscriptions_are_bounded_and_a_stuck_coroutine_callback_is_shown_too() -> None:
    """AsyncSidecar: a coroutine callback awaiting forever is listed in health(), it and an ``async for``
    nobody reads keep at most ``subscription_backlog`` samples (the rest dropped and counted), and stop()
    returns while the callback still awaits. Before, both queued every sample without bound."""

    async def main() -> None:
        sidecar = AsyncSidecar(
            "stuck-async", peer_config(), subscription_backlog=BACKLOG, stuck_callback_after=0.2, stop_timeout=1.0
        )
        await sidecar.start()
        entered, forever = asyncio.Event(), asyncio.Event()

        async def block(_sample: Sample) -> None:
            entered.set()
            await forever.wait()

        try:
            await sidecar.subscribe("stuck/async", block)
            await sidecar.subscribe("stuck/async")  # an iterator nobody reads
            await sidecar.put("stuck/async", "first")
            await sidecar.flush()
            await asyncio.wait_for(entered.wait(), BOUND)
            stuck = await asyncio.to_thread(
                wait_until, lambda: sidecar.health().stuck_callbacks, BOUND, "the stuck callback in health()"
            )
            assert ["stuck-async:stuck/async" in why for why in stuck] == [True]
            for number in range(MORE):
                await sidecar.put("stuck/async", str(number))
            await sidecar.flush()
            dropped = 2 * (1 + MORE - BACKLOG)  # each subscription keeps BACKLOG of its 1 + MORE
            await asyncio.to_thread(
                wait_until, lambda: sidecar.health().dropped_samples == dropped, BOUND, f"{dropped} dropped"
            )
            await asyncio.wait_for(sidecar.stop(), BOUND)
            assert sidecar.state == SidecarState.STOPPED
        finally:
            forever.set()
            await sidecar.stop()

    asyncio.run(main())


def test_interpreter_exit_does_not_wait_for_stuck_callbacks() -> None:
    """A host with 40 callbacks blocked forever that exits without stop() ends (its worker too) within
    the bound; before, its exit waited a second for each stuck callback."""
    completed = subprocess.run(
        [sys.executable, str(HERE / "stuck_callbacks_host.py"), "40"],
        capture_output=True,
        text=True,
        env=child_environment(),
        timeout=BOUND,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    pid = ok_line(completed)["pid"]
    assert wait_until(lambda: worker_gone(pid), BOUND, "the worker gone")
