"""The put pipeline: puts are fire-and-forget and coalesced, with every loss counted and reported.

``Sidecar.put`` hands each put to a buffer; a flusher thread sends whatever piled up as one batch
(an event, so a put costs no round trip). The worker confirms each batch once zenoh has it; a batch
whose worker ended first is counted (``PutsUnconfirmed``), never resent. Put errors surface on the
next call or flush.
"""

from __future__ import annotations

import collections
import itertools
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from boss_sidecar.errors import CallTimeout, PutsUnconfirmed, SidecarError, SidecarUnavailable
from boss_sidecar.policy import SidecarPolicy
from boss_sidecar.rpc import Endpoint
from boss_sidecar.worker_api import Op

MAX_PUT_BATCH_BYTES = 8 * 1024 * 1024
MAX_BATCHES_IN_FLIGHT = 4
"""Put batches sent and not yet confirmed at most: enough to keep the worker busy while the next one
travels, few enough that a worker that freezes holds only these; the rest wait for the next worker."""

Put = tuple[str, bytes, dict[str, Any] | None]
"""One put as the worker takes it: key expression, payload, options (None: zenoh's defaults)."""


class _Batch(NamedTuple):
    """Puts sent to a worker and not yet confirmed by it."""

    endpoint: Endpoint
    seq: int
    puts: int


class PutPipeline:
    """The put buffer, its flusher thread, the batches in flight and the put errors of one sidecar.

    ``endpoint(timeout)`` is the running worker's endpoint (waiting through a restart);
    ``sync(timeout)`` returns once the worker confirmed and reported every earlier batch.
    """

    def __init__(
        self,
        name: str,
        policy: SidecarPolicy,
        log: Any,
        *,
        endpoint: Callable[[float], Endpoint],
        sync: Callable[[float], object],
    ) -> None:
        self.name = name
        self.policy = policy
        self._log = log
        self._endpoint = endpoint
        self._sync = sync
        self._put_errors: list[str] = []
        self._unconfirmed = 0  # puts handed to a worker that ended before confirming them
        self._in_flight: collections.deque[_Batch] = collections.deque()  # sent, not yet confirmed
        self._batch_numbers = itertools.count(1)
        self._puts: list[Put] = []
        self._puts_size = 0
        self._put_cond = threading.Condition()
        self._flusher: threading.Thread | None = None
        self._flushing = False
        self._closing = False

    @property
    def queued(self) -> int:
        """Puts accepted and not yet handed to the worker (at most the policy's put_buffer)."""
        return len(self._puts)

    def open(self) -> None:
        """Accept puts again (before the supervisor starts)."""
        self._closing = False

    def start_flusher(self) -> None:
        """Start the flusher thread unless it runs (after the supervisor started)."""
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(target=self._flush_loop, name=f"{self.name}-puts", daemon=True)
            self._flusher.start()

    def close(self) -> None:
        """Accept no more puts; the flusher sends what is queued, or drops it once the sidecar stopped."""
        self._closing = True
        with self._put_cond:
            self._put_cond.notify_all()

    def forget_after_fork(self) -> None:
        """In a forked child: no flusher thread here, so a put must fail, not pile up."""
        self._closing = True

    def add(self, item: Put) -> None:
        """Queue one put, waiting (bounded) while the buffer is full."""
        with self._put_cond:
            if len(self._puts) >= self.policy.put_buffer and not self._put_cond.wait_for(
                lambda: len(self._puts) < self.policy.put_buffer or self._closing, timeout=self.policy.call_timeout
            ):
                raise CallTimeout(f"{self.name}: put buffer full for {self.policy.call_timeout:g}s")
            if self._closing:
                raise SidecarUnavailable(f"{self.name} is stopped")
            self._puts.append(item)
            self._puts_size += len(item[1]) + len(item[0])
            if len(self._puts) == 1:
                self._put_cond.notify_all()

    def flush(self, seconds: float) -> None:
        """``Sidecar.flush``: wait for the buffer to empty, then the worker's confirmations; raise put errors."""
        with self._put_cond:
            if not self._put_cond.wait_for(lambda: not self._puts and not self._flushing, timeout=seconds):
                raise CallTimeout(f"{self.name}: puts not sent within {seconds:g}s")
        self.settle_batches()
        try:
            self._sync(seconds)  # the worker confirmed and reported every earlier batch before this
        except SidecarError:
            self.settle_batches()
            self.raise_errors()
            raise
        self.raise_errors()

    def raise_errors(self) -> None:
        if not self._put_errors and not self._unconfirmed:
            return
        with self._put_cond:  # the flusher and the reader thread add to these
            errors, self._put_errors = self._put_errors, []
            unconfirmed, self._unconfirmed = self._unconfirmed, 0
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        if unconfirmed:
            also = f"; also: {errors[0]}{more}" if errors else ""
            raise PutsUnconfirmed(
                f"{self.name}: {unconfirmed} puts went to a worker that ended before confirming them "
                f"(each may or may not have been published){also}",
                unconfirmed,
            )
        raise SidecarError(f"{self.name}: {errors[0]}{more}")

    def confirm_batches(self, seq: int) -> None:
        with self._put_cond:
            while self._in_flight and self._in_flight[0].seq <= seq:
                self._in_flight.popleft()
            self._put_cond.notify_all()

    def settle_batches(self) -> None:
        """Count the puts of batches whose worker's channel ended before it confirmed them.

        The channel delivers the worker's confirmations in order before its end, so once it is
        closed, a batch still here will never be confirmed.
        """
        with self._put_cond:
            while self._in_flight and self._in_flight[0].endpoint.is_closed:
                lost = self._in_flight.popleft()
                self._unconfirmed += lost.puts
                self._log.warning("puts unconfirmed", count=lost.puts)
            self._put_cond.notify_all()

    def _flush_loop(self) -> None:
        """Send queued puts as batches (events, so one goes out while the worker runs the last).

        A batch is taken only once a running worker is there, so puts wait in the host through a
        restart and go to the next worker in order. The worker confirms each batch once zenoh has it;
        a batch whose worker ended before confirming it is counted (``PutsUnconfirmed``), never resent:
        it may have been published already.
        """
        while True:
            with self._put_cond:
                self._put_cond.wait_for(lambda: bool(self._puts) or self._closing)
                if not self._puts and self._closing:
                    return
                # Confirmations and a worker's end (settled on the state change) wake this; bounded anyway.
                if not self._put_cond.wait_for(
                    lambda: len(self._in_flight) < MAX_BATCHES_IN_FLIGHT or self._closing, self.policy.call_timeout
                ):
                    continue
            try:
                endpoint = self._endpoint(self.policy.call_timeout)
            except CallTimeout:
                continue  # still restarting: the puts stay queued (put() waits when the buffer is full)
            except SidecarError as exc:
                self._drop_queued(exc)
                continue
            with self._put_cond:
                batch = self._take_batch()
                seq = next(self._batch_numbers)
                self._in_flight.append(_Batch(endpoint, seq, len(batch)))
                self._flushing = True
                self._put_cond.notify_all()
            try:
                endpoint.notify(Op.PUT_BATCH, batch, seq)
            except SidecarError:
                pass  # the channel ended: the batch is counted once it is settled
            finally:
                with self._put_cond:
                    self._flushing = False
                    self._put_cond.notify_all()
            if endpoint.is_closed:
                self.settle_batches()

    def _drop_queued(self, error: SidecarError) -> None:
        """The sidecar stopped or failed: queued puts have nowhere to go; say so, never silently."""
        with self._put_cond:
            dropped, self._puts, self._puts_size = len(self._puts), [], 0
            if dropped:
                self._put_errors.append(f"{dropped} puts not sent: {error}")
            self._put_cond.notify_all()
        if dropped:
            self._log.warning("puts not sent", count=dropped, error=str(error))

    def put_failed(self, errors: list[str]) -> None:
        with self._put_cond:  # the reader thread reports them; the flusher adds its own
            self._put_errors.extend(errors)

    def _take_batch(self) -> list[Put]:
        if self._puts_size <= MAX_PUT_BATCH_BYTES:
            batch, self._puts, self._puts_size = self._puts, [], 0
            return batch
        size = 0
        for index, (key, payload, _options) in enumerate(self._puts):
            size += len(payload) + len(key)
            if size > MAX_PUT_BATCH_BYTES and index > 0:
                break
        else:
            index = len(self._puts)
        batch, self._puts = self._puts[:index], self._puts[index:]
        self._puts_size = sum(len(payload) + len(key) for key, payload, _ in self._puts)
        return batch


__all__ = ["MAX_BATCHES_IN_FLIGHT", "MAX_PUT_BATCH_BYTES", "Put", "PutPipeline"]
