"""The standby thread: a job and the channel's readiness reported by the same wake-up are both acted on."""

from __future__ import annotations

import socket
import threading

import pytest

from boss_sidecar._standby import _Standby

WAIT = 30.0  # the bound on every wait here; a passing run takes a small fraction of it

pytestmark = pytest.mark.skipif(not _Standby.SUPPORTED, reason="the standby needs epoll and eventfd (Linux)")


def test_data_that_arrives_with_a_job_signal_is_not_dropped() -> None:
    """One wake-up can report both a job's signal and the channel readable (armed, so only once). Dropping the
    latter left a caller's reply unread: the role free, the standby disarmed, nobody reading (a rare hang
    seen under load). Here a job arms the standby, data arrives, and a second job is handed while the first
    runs, so it runs in the same pass and its signal is still pending when the thread next waits."""
    ours, theirs = socket.socketpair()
    data_seen = threading.Event()
    standby = _Standby(ours.fileno(), data_seen.set, "test")
    ran = threading.Event()

    def arm_then_data_then_another_job() -> None:
        standby.arm()
        theirs.send(b"x")
        standby.hand(ran.set)

    try:
        standby.hand(arm_then_data_then_another_job)
        assert ran.wait(WAIT)
        assert data_seen.wait(WAIT), "the channel became readable while armed, but the standby never acted on it"
    finally:
        standby.stop()
        ours.close()
        theirs.close()


def test_nothing_is_written_to_the_eventfd_once_the_thread_closed_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread closes its eventfd as it ends; a job or a stop after that must not write to that number,
    which by then may be another file's (another endpoint's socket: eight bytes in its stream)."""
    ours, theirs = socket.socketpair()
    standby = _Standby(ours.fileno(), lambda: None, "test")
    standby.stop()
    standby._thread.join(WAIT)
    assert not standby._thread.is_alive()
    written: list[int] = []
    monkeypatch.setattr("os.eventfd_write", lambda fd, value: written.append(fd))
    try:
        standby.hand(lambda: None)
        standby.stop()
        assert written == []
    finally:
        ours.close()
        theirs.close()
