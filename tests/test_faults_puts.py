"""Puts through a worker that dies mid-burst: none is lost without a word.

Puts the host accepted and had not handed over go to the next worker, in order; puts handed to a
worker that ended before confirming them are counted exactly and raised as ``PutsUnconfirmed`` by
the next put, call or flush().
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from boss_sidecar import PutsUnconfirmed, Sidecar
from boss_sidecar.testing import free_port, peer_config
from peers.fault_support import BOUND, Numbers

MakeSidecar = Callable[..., Sidecar]
PUTS = 30_000
KEY = "faults/puts"


@pytest.mark.parametrize("fault", ["sigkill", "frozen"])
def test_puts_through_a_dying_worker_arrive_in_order_or_are_reported(make_sidecar: MakeSidecar, fault: str) -> None:
    """A burst of puts (congestion control block) with the worker SIGKILLed, or frozen until it is killed
    as hung, a third of the way in: every put not received is among those reported, the received ones
    are in order, and the puts after the fault all arrive through the next worker."""
    port = free_port()
    received = Numbers()
    make_sidecar("puts-sub", peer_config(port)).subscribe(KEY, received)
    # A short heartbeat only where the fault needs it: under load, it could take the next worker for hung too.
    heartbeat = {"heartbeat_interval": 0.2, "heartbeat_timeout": 2.0} if fault == "frozen" else {}
    publisher = make_sidecar("puts-pub", peer_config(connect_ports=(port,)), **heartbeat)
    publisher.put(KEY, "-1", congestion_control="block")
    publisher.flush()
    assert received.wait_for(-1)
    received.seen.clear()
    reported = 0
    for number in range(PUTS):
        if number == PUTS // 3:
            pid = publisher.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL if fault == "sigkill" else signal.SIGSTOP)
        while True:
            try:
                publisher.put(KEY, str(number), congestion_control="block")
                break
            except PutsUnconfirmed as exc:  # raised before this put was taken: put it again
                reported += exc.count
    for _ in range(2):
        try:
            publisher.flush(timeout=BOUND)
        except PutsUnconfirmed as exc:
            reported += exc.count
    assert received.wait_for(PUTS - 1)
    seen = received.seen
    assert seen == sorted(set(seen)), "received out of order or twice"
    lost = PUTS - len(seen)
    assert lost <= reported <= PUTS
    assert publisher.incarnation == 2
