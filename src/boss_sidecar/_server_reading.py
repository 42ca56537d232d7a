"""Reading on the side that mostly serves (the worker): the reader runs each call it reads.

Leader/follower: a reader on a pool thread runs each call it reads itself, so a served call starts
without waiting for another thread to wake. Meanwhile the standby watches the channel (armed once)
and starts another reader only if a message arrives before the call returns; on a busy channel the
reading passes to a pool thread at once instead. Calls read together run one after another on the
reader, their replies sent in one write, with a pool thread watching: past a millisecond it sends
what is done and starts the rest in the pool.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import Any, cast

from boss_sidecar._framing import _ChannelEnded, _FrameReader
from boss_sidecar._reading import _Reading
from boss_sidecar._role import Reading
from boss_sidecar._standby import _Standby
from boss_sidecar.protocol import Call

_RESCUE_AFTER = 0.001  # a batch's calls not run by then on the reader go to the pool (see _run_read_batch)


class _Batch:
    """Calls read together that the reader runs one after another (see _ServerReading._run_read_batch), and the
    replies it holds meanwhile (see _Writer.hold). ``take`` is safe from two threads (a deque's popleft is atomic)."""

    __slots__ = ("armed", "calls", "done", "held", "owner", "size")

    def __init__(self, calls: list[Call], owner: int) -> None:
        self.calls = collections.deque(calls)
        self.owner = owner  # the thread ident whose replies are held
        self.held: list[Any] = []  # frame parts of the replies held
        self.size = 0  # their bytes
        self.done = False  # the reader ran them all
        self.armed = False  # the standby reads meanwhile (a slow call, or one waiting on the peer)

    def take(self) -> Call | None:
        try:
            return self.calls.popleft()
        except IndexError:
            return None

    def take_all(self) -> list[Call]:
        taken = []
        while (call := self.take()) is not None:
            taken.append(call)
        return taken


class _ServerReading(_Reading):
    """A reader on a pool thread reads and runs the calls it reads; the standby steps in while it runs one.
    Without a standby (no epoll: not Linux) the reader passes the reading on before it runs a call."""

    _one_at_a_time = False  # the last read brought one message: the peer waits for each answer

    def start(self, frames: _FrameReader, standby: _Standby | None) -> None:
        super().start(frames, standby)
        self._pool.submit(self.read_loop, frames)

    def take_over(self) -> None:
        """On the standby: a message arrived while the reader runs a call; start another reader."""
        if not self._role.take(Reading.STANDBY):
            return  # the reader is back
        frames = self._frames
        assert frames is not None
        if not self._pass_reading(frames):
            self.read_loop(frames, on_standby=True)  # no pool thread free: read here meanwhile

    def is_reading_job(self, job: object) -> bool:
        return job == self.read_loop

    def read_loop(self, frames: _FrameReader, on_standby: bool = False) -> None:
        """The reading role, on a pool thread it was handed to: read and route batches until the channel ends.

        A call read is run on this thread, so it starts without waiting for another thread to wake. Meanwhile
        the role is free and the standby watches the channel: if a message arrives before the call returns, it
        starts another reader; if not, this thread takes the role back and reads on, and a quick call woke no
        other thread.

        ``on_standby``: the standby reads because no pool thread was free to; it runs no call itself
        and passes the reading to a pool thread as soon as one is free."""
        me = threading.current_thread()
        own_name = me.name
        if not on_standby:
            self._role.take_up(Reading.READER)
        while True:
            me.name = f"{self._name}-reader"
            try:
                kept = self._read_until_call(frames, on_standby)
            except _ChannelEnded as exc:
                me.name = own_name
                self.channel_ended(str(exc))
                return
            me.name = own_name
            if not kept or not self._run_read_calls(kept, frames):
                return  # another thread reads now

    def _read_until_call(self, frames: _FrameReader, on_standby: bool) -> list[Call]:
        """Read and route batches until one brings calls for this thread to run; none when, on
        standby, the reading passed to a pool thread."""
        while True:
            if self._one_at_a_time and not self._server.running:
                self.await_data()
            batch = self.read_batch(frames)
            self._one_at_a_time = len(batch) == 1
            interrupt = self._inbound.route(batch)
            kept = self.hand_over_batch(frames)
            if interrupt is not None:
                raise interrupt
            if on_standby:
                self._server.start_calls(kept)
                if self._pass_reading(frames):
                    return []
            elif kept:
                return kept

    def _pass_reading(self, frames: _FrameReader) -> bool:
        """Hand the reading role (held, on the standby) to a pool thread if one is free now."""
        self._role.hand()
        try:
            if self._pool.try_submit(self.read_loop, frames):
                return True
        except RuntimeError:  # pool shut down: we are closing; this thread reads to the end
            pass
        self._role.take_up(Reading.STANDBY)
        return False

    # ----------------------------------------------------------------- running what was read
    def _run_read_calls(self, calls: list[Call], frames: _FrameReader) -> bool:
        """Run the calls the reader read; True if this thread still reads after.

        Several at once run here as a batch if a pool thread is free to watch it (see _run_read_batch);
        otherwise all but the last start in the pool, as one at a time would."""
        if len(calls) > 1 and self.standby is not None:
            batch = _Batch(calls, threading.get_ident())
            with contextlib.suppress(RuntimeError):  # pool shut down: we are closing
                if self._pool.try_submit(self._rescue, batch):
                    return self._run_read_batch(batch)
        self._server.start_calls(calls[:-1])
        return self._run_read_call(calls[-1], frames)

    def _run_read_call(self, call: Call, frames: _FrameReader) -> bool:
        """Run a call the reader read, on the reader's thread; True if this thread still reads after.

        On a quiet channel the role is set down for the call and the standby watches; on a busy one
        (more already waiting) the role passes to a pool thread at once, one wake rather than the
        standby's two; with no pool thread free, the call goes to the pool and this thread reads on."""
        standby, server = self.standby, self._server
        if standby is None or standby.readable() or not self._pool.has_free():
            self._role.hand()
            with contextlib.suppress(RuntimeError):  # pool shut down: we are closing
                if self._pool.try_submit(self.read_loop, frames):
                    server.run_call(call)
                    return False
            self._role.take_up(Reading.READER)
            server.start_call(call)
            return True
        self.set_down()
        outcome = server.call_outcome(call)
        back = self._role.take(Reading.READER)  # False: a message came meanwhile, the standby started a reader
        if back:
            standby.disarm()  # before the reply goes out: the peer's next message must not wake the standby
        server.reply_call(call, *outcome)
        return back

    def _run_read_batch(self, batch: _Batch) -> bool:
        """Run calls read together on the reader's thread, one after another, their replies held to go out in
        one write (see _Writer.hold); True if this thread still reads after.

        Requests that come together (a peer's many tasks or threads) mostly want quick answers: run here they
        wake no pool thread each, the peer reads their replies with one read instead of one each, and what
        arrives meanwhile waits to be read as one batch. Should a call be slow, the pool thread watching the
        batch (see _rescue) steps in after _RESCUE_AFTER: the replies held go out, the calls not yet run start
        in the pool and the standby reads the channel again. So nothing waits on a slow call for longer than
        that."""
        standby = self.standby
        assert standby is not None
        self._writer.start_holding(batch)
        self._role.set_down()  # for the standby, should the rescue arm it
        while (call := batch.take()) is not None:
            self._server.run_call(call)
        batch.done = True
        back = self._role.take(Reading.READER)  # False: the standby read meanwhile and started another reader
        if back and batch.armed:
            standby.disarm()
        self._writer.release(batch)
        return back

    def out_of_batch(self) -> None:
        """A call run in a batch (see _run_read_batch) asked the peer something and will wait for the answer: have
        the standby read the channel, and send the replies held, rather than wait for the rescue."""
        batch = cast("_Batch | None", self._writer.held_here())
        if batch is not None:
            self._let_standby_read(batch)
            self._writer.release(batch)

    def _let_standby_read(self, batch: _Batch) -> None:
        """While the reader runs ``batch``, have the standby read what comes (the reader disarms it after)."""
        if not batch.armed:
            batch.armed = True
            assert self.standby is not None
            self.standby.arm()

    def _rescue(self, batch: _Batch) -> None:
        """On a pool thread, a moment after the reader started a batch of calls: if it has not run them all yet
        (a slow call), have the standby read the channel again, send the replies held and start the calls not
        yet reached in the pool. The wait is the point: a batch of quick calls is done by then."""
        if batch.done:
            return
        time.sleep(_RESCUE_AFTER)
        if batch.done:
            return
        self._let_standby_read(batch)
        self._writer.release(batch)
        rest = batch.take_all()
        if rest:
            self._server.start_calls(rest[:-1])
            self._server.run_call(rest[-1])
