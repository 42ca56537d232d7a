"""What both reading strategies share: the reading role, one read, and handing a batch's outcome on.

Who reads depends on the side, since every hand-off from one thread to another costs a wake-up:
_CallerReading (a caller reads its own reply) suits the side that mostly calls, _ServerReading (a
reader runs each call it reads) the side that mostly serves. Both keep the rule of ``_role``: one
thread at a time reads, and only it routes what it read.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from boss_sidecar._framing import _ChannelEnded, _FrameReader
from boss_sidecar._inbound import Frame, _Inbound
from boss_sidecar._pending import _Pending
from boss_sidecar._pool import _Pool
from boss_sidecar._requests import _Requests
from boss_sidecar._role import ReadingRole
from boss_sidecar._serving import _Server
from boss_sidecar._spin import _SpinBudget
from boss_sidecar._standby import _Standby
from boss_sidecar._writer import _Writer
from boss_sidecar.errors import ProtocolError
from boss_sidecar.protocol import Call

if TYPE_CHECKING:
    from boss_sidecar.rpc import Endpoint


class _Reading:
    """The reading strategy of one endpoint; ``start`` gives it the channel once the endpoint starts."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        role: ReadingRole,
        requests: _Requests,
        server: _Server,
        inbound: _Inbound,
        writer: _Writer,
        pool: _Pool,
        spin: _SpinBudget,
    ) -> None:
        self._endpoint = endpoint
        self._name = endpoint.name
        self._role = role
        self._requests = requests
        self._server = server
        self._inbound = inbound
        self._writer = writer
        self._pool = pool
        self._spin = spin
        self._socket = endpoint._socket
        self.standby: _Standby | None = None
        self._frames: _FrameReader | None = None

    def start(self, frames: _FrameReader, standby: _Standby | None) -> None:
        """Begin reading ``frames``; the role is held (HANDED) until then."""
        self._frames, self.standby = frames, standby

    def take_over(self) -> None:
        """On the standby: a message arrived while no one read."""
        raise NotImplementedError

    def wait(self, pending: _Pending, seconds: float | None) -> bool:
        """Block a sync caller until ``pending`` is settled (True) or ``seconds`` passed."""
        return pending.wait(seconds)

    def awaiting(self, pending: _Pending, loop: asyncio.AbstractEventLoop, seconds: float | None) -> None:
        """An async caller on ``loop`` is about to await ``pending``."""

    def recover(self) -> None:
        """After a call on this thread was cut short (an interrupt): give back what of the reading it still holds."""

    def is_reading_job(self, job: object) -> bool:
        """Whether ``job``, dropped from the pool, was the reading role handed to a pool thread."""
        return False

    def out_of_batch(self) -> None:
        """The current thread, running a batch of calls, sent a request (see _ServerReading)."""

    # ----------------------------------------------------------------- shared steps
    def set_down(self) -> None:
        """Free the reading role (held): whoever comes first takes it; the standby reads what comes meanwhile."""
        assert self.standby is not None
        self._role.set_down()
        self.standby.arm()

    def hand_over_batch(self, frames: _FrameReader | None, here: asyncio.AbstractEventLoop | None = None) -> list[Call]:
        """Wake the callers answered and start the calls received in the batch just read.

        Done last, just before the reader blocks again (which hands back the GIL): a thread woken
        earlier would find the GIL taken and sleep once more, and each wake costs microseconds.
        ``here``: the loop running this thread (an async caller reading), whose futures are resolved at once.

        The batch's calls are returned for the reader to run itself (see _ServerReading); when closing
        they go to the pool (which refuses them) and none is returned."""
        self._requests.wake(here)
        server = self._server
        calls, server.calls = server.calls, []
        if frames is not None and self._requests.closed is None:
            return calls
        server.start_calls(calls)
        return []

    def channel_ended(self, reason: str) -> None:
        """The reader saw the channel end: fail what waits. The role stays taken, so no one reads a
        closed descriptor."""
        self._role.end()
        self.hand_over_batch(None)
        self._endpoint._channel_ended(reason)

    @staticmethod
    def read_batch(frames: _FrameReader) -> list[Frame]:
        """One read of the channel and the messages it completed. A failed read ends the channel
        (_ChannelEnded, naming why); a read whose receive timeout passed (BlockingIOError) does not."""
        try:
            return frames.batch()
        except BlockingIOError:
            raise
        except (OSError, ValueError, ProtocolError) as exc:
            raise _ChannelEnded(f"channel failed while reading: {exc}") from exc

    def await_data(self, deadline: float | None = None) -> None:
        """Busy-wait up to ``busy_wait`` seconds (and not past ``deadline``) for the peer's next bytes,
        before a read that would sleep.

        On a virtual machine a thread woken from sleep starts some 20 to 50 microseconds late (the
        virtual CPU halted), against about one for a poll that finds data, and a reply usually comes
        within tens of microseconds. Only the lone waiter spins (one request pending, or no served call
        running): where other threads have work, the spinner would only take turns at the GIL from them.
        After a miss the next waits sleep at once (see _SpinBudget): on a busy machine the poll holds the core
        the peer needs."""
        budget = self._spin.next_wait()
        if not budget or self.standby is None:
            return
        end = time.monotonic() + budget
        self.spin_until(end if deadline is None else min(end, deadline))

    def spin_until(self, end: float) -> bool:
        """Poll until the peer's bytes are there (True) or the clock passes ``end``; tell the budget which."""
        standby, clock = self.standby, time.monotonic
        assert standby is not None
        while not standby.readable():
            if clock() >= end:
                self._spin.miss()
                return False
        self._spin.hit()
        return True
