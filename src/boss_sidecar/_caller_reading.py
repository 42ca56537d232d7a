"""Reading on the side that mostly calls (the host): a caller reads its own reply.

The role is free between messages. A sync caller waiting for its reply reads the channel itself, so
the reply wakes no other thread; so does the lone async caller, on its loop thread, for as long as it
busy-waits; whatever arrives while no caller reads wakes the standby thread (epoll), which reads it.
Work for the peer never runs on a caller's thread (it may hold locks that work needs): a caller that
reads some hands it, with the role, to the standby, which runs it in order and starts calls in the pool.
"""

from __future__ import annotations

import asyncio
import functools
import math
import socket
import time
from collections.abc import Callable

from boss_sidecar._framing import _ChannelEnded, _FrameReader
from boss_sidecar._pending import _Pending
from boss_sidecar._reading import _Reading
from boss_sidecar._role import Reading
from boss_sidecar._standby import _Standby
from boss_sidecar._writer import _timeval

_LINGER = 0.002  # seconds the standby reads on after a message, in case more comes (see _read_on)


class _Handover:
    """The reading role on its way from a caller to the standby: it holds the role (see ``_role``) until the
    standby takes it up, so a caller interrupted before queuing it can queue it again (see recover)."""

    __slots__ = ("work",)

    def __init__(self, work: Callable[[_Handover], None]) -> None:
        self.work = work

    def __call__(self) -> None:
        self.work(self)


class _CallerReading(_Reading):
    """Callers read for their replies; the standby reads the rest."""

    _read_bound = math.inf  # the socket's receive timeout (see _bound_read)

    def start(self, frames: _FrameReader, standby: _Standby | None) -> None:
        super().start(frames, standby)
        self.set_down()

    def take_over(self) -> None:
        """On the standby: a message arrived while no caller read; read it."""
        if self._role.take(Reading.STANDBY):
            self._read_on_standby()

    def recover(self) -> None:
        """After a call on this thread was cut short (an interrupt: Ctrl-C, or any exception a signal handler
        raises): give back the role if this thread still holds it, queue again a handover it may not have
        queued, and arm the standby, which a free role may have missed. Only on that way out, so the few system
        calls cost nothing on the common path; each step is harmless if there was nothing to do."""
        role, standby = self._role, self.standby
        if standby is None:
            return
        holder = role.holder
        if isinstance(holder, _Handover) and role.state is Reading.HANDED:
            standby.hand(holder)  # queued twice at worst: the second finds the role taken up already
        else:
            role.give_back()
        standby.arm()

    # ----------------------------------------------------------------- sync callers
    def wait(self, pending: _Pending, seconds: float | None) -> bool:
        """Read for ``pending`` if no one reads, else wait for the reader to settle it."""
        if self._role.take(Reading.CALLER):
            return self._read_for(pending, seconds)
        return pending.wait(seconds)

    def _read_for(self, pending: _Pending, seconds: float | None) -> bool:
        """Holding the role: read the channel until ``pending`` is settled (True) or ``seconds`` pass.

        The caller reads its own reply, so no other thread wakes to hand it over. Other replies are
        settled as the reader would; work for the peer (events, attribute access) goes, with the
        role and the rest of the batch, to the standby thread, which runs it in order and starts calls in
        the pool. As when a reader runs that work itself, the batch's replies are settled after it ran."""
        standby, frames, table = self.standby, self._frames, self._requests.table
        assert standby is not None and frames is not None
        standby.disarm()
        deadline = None if seconds is None else time.monotonic() + seconds
        role, me = self._role, self._role.thread  # taken just now: this thread
        try:
            while not pending.wait(0):
                if len(table) == 1:
                    self.await_data(deadline)  # before _bound_read, which on an os.pipe sleeps in poll
                if not self._bound_read(deadline):
                    return False
                try:
                    interrupt = self._read_as_caller(frames)
                except BlockingIOError:  # the read's bound passed (see _bound_read)
                    continue
                if interrupt is not None:
                    raise interrupt
                if role.thread is not me:  # handed to the standby with work for the peer
                    return pending.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            return True
        except _ChannelEnded as exc:
            self.channel_ended(str(exc))
        finally:
            if role.thread is me:
                self.set_down()
        return pending.wait(0)  # the channel's end settled it

    # ----------------------------------------------------------------- async callers
    def awaiting(self, pending: _Pending, loop: asyncio.AbstractEventLoop, seconds: float | None) -> None:
        """If no one reads: busy-wait for the reply on the loop (see _read_on_loop), else hand the role to
        the standby, which reads while async callers wait."""
        if not self._role.take(Reading.CALLER):
            return
        standby = self.standby
        assert standby is not None
        standby.disarm()
        if not self._read_on_loop(pending, loop, seconds):
            handover = _Handover(self._read_handed)
            self._role.hand(handover)
            standby.hand(handover)

    def _read_on_loop(self, pending: _Pending, loop: asyncio.AbstractEventLoop, seconds: float | None) -> bool:
        """Holding the role (the standby disarmed), on the async caller's loop thread: busy-wait up to
        ``busy_wait`` for the reply and read it here. True if the role is taken care of (set down, or gone
        with work for the peer to the standby, or the channel ended); False to hand it to the standby.

        Only the lone async caller does (one request pending): a loop woken by another thread starts as late
        as any thread woken from sleep, and a reply read here resolves the future before it is awaited. Work for
        the peer read meanwhile goes, with the role, to the standby, as in ``_read_for``; the loop never blocks:
        it reads only what ``readable`` found, and a message only partly come waits for the standby."""
        frames, table = self._frames, self._requests.table
        assert frames is not None
        if len(table) != 1 or self._requests.awaited != 1:
            return False
        budget = self._spin.next_wait()
        if not budget:
            return False
        if self._writer.is_corked(loop):  # the request waits for the end of the turn; no one else's will join it
            self._writer.flush()
        end = time.monotonic() + (budget if seconds is None else min(budget, seconds))
        role, keep = self._role, False
        try:
            while pending.request.id in table:
                if not self.spin_until(end):
                    keep = True  # for the caller to hand to the standby
                    return False
                try:
                    interrupt = self._read_as_caller(frames, loop)
                except BlockingIOError:  # readable, yet nothing to read after all
                    continue
                if interrupt is not None:
                    raise interrupt
                if not role.reads_here():  # handed to the standby with work for the peer
                    return True
            return True
        except _ChannelEnded as exc:
            self.channel_ended(str(exc))
            return True
        finally:
            if not keep and role.reads_here():
                self.set_down()

    # ----------------------------------------------------------------- reading on a caller's thread
    def _read_as_caller(
        self, frames: _FrameReader, here: asyncio.AbstractEventLoop | None = None
    ) -> BaseException | None:
        """On a caller's thread, holding the role: read and route one batch; the interrupt (Ctrl-C) met while
        routing, to raise once the role is seen to.

        Work for the peer in the batch never runs here (the caller may hold locks it needs): it goes, with
        the role and the batch's replies, to the standby (see _finish_batch), so the replies are settled
        after it ran, as when a reader runs it. ``here``: the caller's loop, whose futures are resolved at once."""
        assert self.standby is not None
        server = self._server
        server.deferred = []
        try:
            interrupt = self._inbound.route(self.read_batch(frames))
        finally:
            deferred, server.deferred = server.deferred, None
        if deferred or server.calls:
            handover = _Handover(functools.partial(self._finish_batch, deferred))
            self._role.hand(handover)  # the handover holds the role: an interrupt from here on leaves it queued
            self.standby.hand(handover)  # (or for recover to queue): the work may interrupt this thread at once
            return interrupt
        self.hand_over_batch(frames, here)
        return interrupt

    def _bound_read(self, deadline: float | None) -> bool:
        """Bound the next read so it cannot block past ``deadline`` (None: no deadline); False once it passed.

        A read that blocks with a receive timeout wakes about as fast as a bare pipe read; waiting for
        the descriptor to be readable first (poll) cost some 35 microseconds more a wake-up here. The
        timeout is set anew only when it would outlast the deadline or is under half the time left (a
        system call saved on most calls): one that ends sooner only makes the read return early, to be
        bounded again. Only the thread holding the role reads, so the option is its alone meanwhile."""
        if deadline is None:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if self._socket is None:  # an os.pipe: no receive timeout
            assert self.standby is not None
            return self.standby.readable(left)
        if not left / 2 <= self._read_bound <= left:
            self._set_read_bound(left)
        return True

    def _set_read_bound(self, seconds: float) -> None:
        """Set the socket's receive timeout (math.inf: none); a no-op on an os.pipe."""
        if self._socket is not None and self._read_bound != seconds:
            self._socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(0 if seconds == math.inf else seconds)
            )
            self._read_bound = seconds

    # ----------------------------------------------------------------- on the standby
    def _finish_batch(self, works: list[Callable[[], None]], handover: _Handover) -> None:
        """On the standby, with the role a caller handed on: run the peer's work read in order, settle the
        batch's replies and start its calls, then set the role down."""
        if not self._role.take_up(Reading.STANDBY, handover):
            return  # queued twice (see recover), and taken up already
        try:
            for work in works:
                try:
                    work()
                except Exception:  # each reports its own failures; this is the last resort
                    self._endpoint._log.exception("served work failed")
            self._server.start_calls(self.hand_over_batch(self._frames))
        finally:
            self.set_down()

    def _read_handed(self, handover: _Handover) -> None:
        """On the standby: read with the role an async caller handed on (see awaiting)."""
        if self._role.take_up(Reading.STANDBY, handover):
            self._read_on_standby(handed=True)

    def _read_on_standby(self, handed: bool = False) -> None:
        """On the standby, holding the role: read what came while no caller read (``handed``: taken up from an
        async caller that just sent a request), then read on, blocked, while an async caller awaits a reply or, for a
        moment, in case more comes (a stream of events); then set the role down.

        A thread blocked reading wakes sooner than one waiting in epoll (here, by some 35 microseconds), and
        an async caller cannot read for itself."""
        standby, frames, requests = self.standby, self._frames, self._requests
        assert standby is not None and frames is not None
        if not (handed and requests.awaited) and not standby.readable():  # a caller read it before we took the role
            self.set_down()
            return
        interrupt = None
        while interrupt is None:
            try:
                interrupt = self._inbound.route(self.read_batch(frames))
            except BlockingIOError:  # nothing came within the read's bound
                if not requests.awaited:
                    break
            except _ChannelEnded as exc:
                self.channel_ended(str(exc))
                return
            else:
                self._server.start_calls(self.hand_over_batch(frames))
            if not self._read_on():
                break
        self.set_down()
        if interrupt is not None:
            raise interrupt

    def _read_on(self) -> bool:
        """Whether the standby reads on, blocked: unbounded while an async caller awaits a reply yet to come, else
        a moment if it just read work for the peer (events come in streams). Not after replies alone: a sync
        caller reads its own reply, and the lone async caller too (see _read_on_loop), if the standby does not
        hold on to the reading."""
        server = self._server
        streaming, server.streaming = server.streaming, False
        if self._requests.awaited and self._requests.table:
            self._set_read_bound(math.inf)
            return True
        if not streaming or self._socket is None:  # an os.pipe has no receive timeout
            return False
        self._set_read_bound(_LINGER)
        return True
