"""Races and interrupts around the worker's lifecycle: restart() and stop() against worker deaths,
Ctrl-C during stop(), a SIGTERM from outside, and a replay that hangs.

One worker at a time whatever the interleaving; a call sees the old worker, a SidecarError, or the
new one fully replayed; an interrupted stop is finished by the next stop() or start().
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from boss_sidecar import Sidecar, SidecarError, SidecarState, StateChange
from boss_sidecar.testing import free_port, peer_config, wait_until
from peers.fault_support import BOUND, CtrlCAtSigterm, RestartWatch, worker_gone, workers_of

S = SidecarState
MakeSidecar = Callable[..., Sidecar]
ECHO = "peers.fault_objects:FaultEcho"


class _Caller:
    """A thread calling a hosted echo with tokens of its own until stopped; keeps what is not a
    SidecarError or not its own token (both must never happen)."""

    def __init__(self, echo: Any) -> None:
        self.echo = echo
        self.wrong: list[str] = []
        self.ok = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        number = 0
        while not self.done.is_set():
            number += 1
            try:
                result = self.echo.echo(number)
            except SidecarError:
                continue
            except Exception as exc:
                self.wrong.append(f"{type(exc).__name__}: {exc}")
                continue
            if result == number:
                self.ok += 1
            else:
                self.wrong.append(f"sent {number}, got {result!r}")

    def finish(self) -> list[str]:
        self.done.set()
        self.thread.join(BOUND)
        assert not self.thread.is_alive(), "a call did not end"
        return self.wrong


def test_restart_right_after_the_channel_broke_starts_one_worker(make_sidecar: MakeSidecar) -> None:
    """restart() while the supervisor is already collecting a worker whose channel broke (it still lives
    a moment): one replacement, not two (a second would find the fixed port taken), never FAILED; a
    thread calling a hosted object meanwhile gets its own result or a SidecarError each time."""
    sidecar = make_sidecar("race-break", peer_config(free_port()), max_restarts=1000, backoff_initial=0)
    caller = _Caller(sidecar.host(ECHO))
    for _ in range(3):
        old = sidecar.pid
        with contextlib.suppress(SidecarError):
            sidecar.host(ECHO).break_channel()
        with contextlib.suppress(SidecarError):  # allowed while the policy restarts anyway
            sidecar.restart()
        wait_until(lambda old=old: sidecar.state in (S.RUNNING, S.FAILED) and sidecar.pid != old, BOUND, "a new worker")
        assert sidecar.state == S.RUNNING, sidecar.health().reason
        assert workers_of("race-break") == [sidecar.pid]
    assert caller.finish() == []  # each call: its own result or a SidecarError
    assert caller.ok > 0


def test_stop_racing_restart_and_a_kill_leaves_no_worker(make_sidecar: MakeSidecar) -> None:
    """restart() in one thread, kill -9 and stop() in another: stop() ends STOPPED and no worker is left."""
    sidecar = make_sidecar("race-stop", max_restarts=100, backoff_initial=0)
    sidecar.host(ECHO)
    pids = {sidecar.pid}
    outcome: list[BaseException | None] = []

    def restart() -> None:
        try:
            sidecar.restart()
            outcome.append(None)
        except SidecarError as exc:
            outcome.append(exc)

    restarter = threading.Thread(target=restart, daemon=True)
    restarter.start()
    wait_until(lambda: sidecar.state != S.RUNNING or sidecar.pid not in pids, BOUND, "the restart to begin")
    pids.add(sidecar.pid)
    racing = sidecar.pid  # the new worker, while it may still be starting
    if racing is not None:
        os.kill(racing, signal.SIGKILL)
    sidecar.stop()
    restarter.join(BOUND)
    assert not restarter.is_alive() and len(outcome) == 1
    assert sidecar.state == S.STOPPED
    assert workers_of("race-stop") == []
    assert all(worker_gone(pid) for pid in pids if pid is not None)


@pytest.fixture
def interruptible() -> Iterator[tuple[Sidecar, CtrlCAtSigterm]]:
    backend = CtrlCAtSigterm()
    sidecar = Sidecar("ctrl-c", peer_config(), backend=backend, stop_timeout=2.0).start()
    try:
        yield sidecar, backend
    finally:
        sidecar.stop()


@pytest.mark.parametrize("then", ["stop", "start"])
def test_ctrl_c_during_stop_of_a_frozen_worker_is_finished_by_the_next_stop_or_start(
    interruptible: tuple[Sidecar, CtrlCAtSigterm], then: str
) -> None:
    """KeyboardInterrupt while stop() escalates (after SIGTERM to a frozen worker): a second stop() ends
    STOPPED with the worker gone; or start() finishes that stop and starts a new worker."""
    sidecar, backend = interruptible
    frozen = sidecar.pid
    assert frozen is not None
    os.kill(frozen, signal.SIGSTOP)
    backend.armed = True
    with pytest.raises(KeyboardInterrupt):
        sidecar.stop()
    if then == "stop":
        sidecar.stop()
        assert sidecar.state == S.STOPPED
    else:
        sidecar.start()
        assert sidecar.state == S.RUNNING and sidecar.pid not in (None, frozen)
        assert sidecar.info()["zid"]
    assert worker_gone(frozen)


def test_ctrl_c_as_stop_begins_leaves_a_stop_the_next_stop_finishes() -> None:
    """KeyboardInterrupt at the very start of stop() (a state hook sees STOPPING): a second stop() finishes."""
    sidecar = Sidecar("ctrl-c-early", peer_config()).start()
    pid = sidecar.pid
    interrupt = [True]

    def on_change(change: StateChange) -> None:
        if change.new == S.STOPPING and interrupt and interrupt.pop():
            raise KeyboardInterrupt

    sidecar.on_state_change(on_change)
    try:
        with pytest.raises(KeyboardInterrupt):
            sidecar.stop()
        assert sidecar.state == S.STOPPING
    finally:
        sidecar.stop()
    assert sidecar.state == S.STOPPED
    assert pid is not None and worker_gone(pid)


def test_sigterm_from_outside_is_named_and_on_failure_does_not_restart(make_sidecar: MakeSidecar) -> None:
    """A SIGTERM the host did not send reads "terminated by SIGTERM from outside"; on-failure (like
    systemd's) takes it as a wanted stop, always restarts."""
    stays = make_sidecar("sigterm-on-failure")
    returns = make_sidecar("sigterm-always", restart="always")
    watch = RestartWatch()
    returns.on_restart(watch)
    for sidecar in (stays, returns):
        pid = sidecar.pid
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
    wait_until(lambda: stays.state == S.STOPPED, BOUND, "the on-failure sidecar to stop")
    assert stays.health().reason == "worker terminated by SIGTERM from outside; restart policy is on-failure"
    assert stays.health().last_exit == "terminated by SIGTERM from outside"
    assert watch.next_reason() == "worker terminated by SIGTERM from outside"
    assert returns.info()["zid"]


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "fresh"])
def test_a_sigterm_taken_by_another_worker_thread_still_ends_the_worker(
    make_sidecar: MakeSidecar, forked: bool
) -> None:
    """The kernel hands a process's SIGTERM to any of its threads, but Python runs the handler on the
    main thread only: a SIGTERM that a call's thread takes still ends the worker, read as from outside."""
    sidecar = make_sidecar(f"sigterm-thread-{'forked' if forked else 'fresh'}", worker_template=forked)
    pid = sidecar.pid
    with contextlib.suppress(SidecarError):  # the reply may be lost as the worker leaves
        sidecar.host(ECHO).sigterm_this_thread()
    wait_until(lambda: sidecar.state == S.STOPPED, BOUND, "the worker to end on its SIGTERM")
    assert sidecar.health().reason == "worker terminated by SIGTERM from outside; restart policy is on-failure"
    assert pid is not None and worker_gone(pid)


def test_a_replay_that_times_out_is_a_failed_start_retried_under_the_policy(
    make_sidecar: MakeSidecar, tmp_path: Path
) -> None:
    """restart() whose replay hangs past start_timeout raises, the state goes to BACKOFF (not FAILED) and
    the next attempt brings the sidecar back with the object replayed."""
    marker = tmp_path / "hang"
    sidecar = make_sidecar("replay-hangs", start_timeout=2.0, backoff_initial=0)
    hosted = sidecar.host("peers.fault_objects:HangsWhileMarked", str(marker))
    backoffs: list[str] = []

    def on_change(change: StateChange) -> None:
        if change.new == S.BACKOFF:
            backoffs.append(change.reason)
            marker.unlink(missing_ok=True)  # the next attempt's replay goes through

    sidecar.on_state_change(on_change)
    marker.touch()
    with pytest.raises(SidecarError, match="not ready within 2s"):
        sidecar.restart()
    wait_until(lambda: sidecar.state == S.RUNNING, BOUND, "the retried restart")
    assert backoffs and backoffs[0].startswith("restart failed:")
    assert hosted.echo("back") == "back"
