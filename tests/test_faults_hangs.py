"""Hangs and stalls: a frozen worker, methods that never return, a zenoh call that outlives its caller.

Each is caught by the supervisor's heartbeat (no answer, or the worker's pong naming calls far past
their timeout), the worker is killed and replaced with the reason, and calls end instead of queueing.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest

from boss_sidecar import CallTimeout, RemoteError, SidecarCrashed
from boss_sidecar.samples import Query
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import wait_until
from peers.fault_support import BOUND, RestartWatch, worker_gone

MakeSidecar = Callable[..., Sidecar]
ECHO = "peers.fault_objects:FaultEcho"
WORKER_THREADS = 32
"""The worker's Endpoint serves at most this many calls at once (its thread pool)."""
FAST_HEARTBEAT = {"heartbeat_interval": 0.2, "heartbeat_timeout": 2.0}


def _watched(make_sidecar: MakeSidecar, **policy: Any) -> tuple[Sidecar, RestartWatch]:
    sidecar = make_sidecar("hangs", **FAST_HEARTBEAT, **policy)
    watch = RestartWatch()
    sidecar.on_restart(watch)
    return sidecar, watch


def _start_calls(count: int, call: Callable[[int], Any]) -> Callable[[], list[Any]]:
    """Run ``call(i)`` in ``count`` threads; the returned function joins them (bounded) and gives each
    one's result or exception."""
    outcomes: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            outcomes[index] = call(index)
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()

    def finish() -> list[Any]:
        for thread in threads:
            thread.join(BOUND)
        assert not any(thread.is_alive() for thread in threads), "a call did not end"
        return outcomes

    return finish


def test_sigstopped_worker_is_replaced_and_calls_to_it_end_long_before_their_timeout(
    make_sidecar: MakeSidecar,
) -> None:
    """SIGSTOP: the heartbeat kills and restarts it; calls meanwhile end (own result or SidecarCrashed)."""
    sidecar, watch = _watched(make_sidecar, call_timeout=120.0)
    echo = sidecar.host(ECHO)
    frozen = sidecar.pid
    assert frozen is not None
    os.kill(frozen, signal.SIGSTOP)
    try:
        outcomes = _start_calls(4, lambda i: echo.echo(f"token-{i}"))()  # joined within BOUND, far below 120 s
        reason = watch.next_reason()
    finally:
        if not worker_gone(frozen):
            os.kill(frozen, signal.SIGKILL)
    for index, outcome in enumerate(outcomes):
        assert outcome == f"token-{index}" or isinstance(outcome, SidecarCrashed), outcome
    assert reason == "hung: no heartbeat answer within 2s"
    assert "restarted after: hung: no heartbeat answer" in sidecar.health().reason
    assert echo.echo("after") == "after"
    assert worker_gone(frozen)


def test_method_blocking_forever_times_out_and_the_worker_is_replaced_while_other_calls_run(
    make_sidecar: MakeSidecar,
) -> None:
    """A hosted method that never returns: CallTimeout for it, other calls still served, then a restart."""
    sidecar, watch = _watched(make_sidecar, call_timeout=1.0)
    echo = sidecar.host(ECHO)
    first = sidecar.pid
    finish = _start_calls(1, lambda _: echo.block_forever())
    wait_until(lambda: echo.blocking == 1, BOUND, "the method to block in the worker")
    assert echo.echo("meanwhile") == "meanwhile"  # served on another worker thread
    (outcome,) = finish()
    assert isinstance(outcome, CallTimeout), outcome
    reason = watch.next_reason()
    assert reason.startswith("hung: call 'block_forever' of FaultEcho (hosted #"), reason
    assert reason.endswith("past its 1s timeout"), reason
    assert sidecar.pid != first
    assert echo.echo("after") == "after"
    assert echo.blocking == 0  # hosted again, fresh, on the new worker


def test_method_holding_the_gil_forever_is_caught_by_the_missing_heartbeat(make_sidecar: MakeSidecar) -> None:
    """A method that never releases the GIL stops the worker answering pings: killed, SidecarCrashed."""
    sidecar, watch = _watched(make_sidecar, call_timeout=120.0)
    echo = sidecar.host(ECHO)
    with pytest.raises(SidecarCrashed):
        echo.hog_gil()  # ends when the heartbeat kills the worker, far before its 120 s timeout
    assert watch.next_reason() == "hung: no heartbeat answer within 2s"
    assert echo.echo("after") == "after"


def test_zenoh_get_outliving_its_callers_timeout_is_reported_and_the_worker_replaced(
    make_sidecar: MakeSidecar,
) -> None:
    """A get on a queryable whose handler never answers, zenoh timeout 1 h, caller timeout 1 s."""
    sidecar, watch = _watched(make_sidecar)
    release = threading.Event()
    answering: list[Query] = []

    def never_answers(query: Query) -> None:
        answering.append(query)
        release.wait(BOUND * 3)

    sidecar.queryable("fault/hangs/silent", never_answers)
    endpoint = sidecar._supervisor.endpoint()
    try:
        with pytest.raises(CallTimeout, match="call 'get' got no answer within 1s"):
            endpoint.request("get", ("fault/hangs/silent", {"timeout": 3600.0}), timeout=1.0)
        assert answering, "the query reached the host's handler"
        assert sidecar.info()["zid"]  # other calls are still served meanwhile
        reason = watch.next_reason()
    finally:
        release.set()
    assert reason.startswith("hung: call 'get' running ") and reason.endswith("past its 1s timeout"), reason
    assert sidecar.info()["zid"]


class _Gate:
    """Exported to the worker: counts hosted calls that entered a blocking method."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = threading.Condition()

    def entered(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self.count >= count, BOUND), f"{self.count} of {count} entered"


def test_a_call_queued_behind_a_full_worker_fails_at_its_own_timeout(make_sidecar: MakeSidecar) -> None:
    """Every worker thread blocked (by calls with a long timeout): a further call waits in the queue,
    fails at its own 1 s timeout, and it is the one the worker reports, so the worker is replaced."""
    sidecar, watch = _watched(make_sidecar, call_timeout=1.0)
    echo = sidecar.host(ECHO)
    gate = _Gate()
    block = ("call_object", (echo._obj_id, "block_forever", (sidecar.expose(gate),), {}))
    endpoint = sidecar._supervisor.endpoint()
    finish = _start_calls(WORKER_THREADS, lambda _: endpoint.request(*block, timeout=BOUND * 3))
    gate.wait(WORKER_THREADS)
    with pytest.raises(CallTimeout, match="got no answer within 1s"):
        echo.echo("queued")
    assert watch.next_reason().endswith("past its 1s timeout")  # the blockers' timeout is far away
    assert all(isinstance(outcome, SidecarCrashed) for outcome in finish())
    assert echo.echo("after") == "after"


class _InterruptingGate:
    """Exported to the worker: interrupts the host's main thread (as Ctrl-C does) once a call entered."""

    def entered(self) -> None:
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


def test_ctrl_c_while_a_call_waits_raises_in_the_caller_and_the_sidecar_serves_on(make_sidecar: MakeSidecar) -> None:
    """SIGINT in the host while its main thread waits for (or reads) a reply: KeyboardInterrupt there,
    nothing else lost; the same worker serves the next calls, unrestarted."""
    sidecar, watch = _watched(make_sidecar, call_timeout=BOUND * 3)
    echo = sidecar.host(ECHO)
    worker = sidecar.pid
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            echo.block_forever(sidecar.expose(_InterruptingGate()))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert echo.echo("after") == "after"
    assert echo.big(1_000_000) == b"x" * 1_000_000
    assert echo.blocking == 1  # the interrupted call still runs in the worker: only its caller gave up
    assert sidecar.pid == worker
    assert watch.reasons == []


@pytest.mark.parametrize(
    ("method", "args", "named"),
    [("exit", (4,), "SystemExit"), ("interrupt", (), "KeyboardInterrupt"), ("generator_exit", (), "GeneratorExit")],
)
def test_a_hosted_method_raising_system_exit_or_an_interrupt_answers_at_once_and_the_worker_serves_on(
    make_sidecar: MakeSidecar, method: str, args: tuple[Any, ...], named: str
) -> None:
    """Vendor code calling ``sys.exit()`` (or raising KeyboardInterrupt, GeneratorExit) in a hosted method: the
    call fails at once with a RemoteError naming it, not a CallTimeout; the call does not stay among the
    worker's running calls (so it is never reported overdue) and the same worker serves on, unrestarted."""
    sidecar, watch = _watched(make_sidecar, call_timeout=BOUND)
    hosted = sidecar.host("peers.raising_objects:Raiser")
    pid = hosted.worker_pid()
    with pytest.raises(RemoteError, match=named):
        getattr(hosted, method)(*args)
    assert hosted.other_running_calls() == 0
    assert hosted.worker_pid() == pid
    assert watch.reasons == []
