"""``Sidecar``: the host's handle on a supervised zenoh worker, used as if zenoh were local.

The host never imports zenoh. Declarations are kept in a ledger and declared again on every new
worker, so callbacks keep firing across restarts. Puts are fire-and-forget and coalesced: a
flusher thread sends whatever piled up as one message, so a put costs no round trip.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from boss_sidecar._core import Request, SidecarCore, check_key, check_name, ids, options, shared_put_options
from boss_sidecar.delivery import CallbackDelivery, Delivery, QueueDelivery
from boss_sidecar.errors import CallTimeout, ConfigError, PutsUnconfirmed, SidecarError, SidecarUnavailable
from boss_sidecar.health import Health
from boss_sidecar.hosted import HostedObject
from boss_sidecar.logs import get_logger
from boss_sidecar.policy import SidecarPolicy
from boss_sidecar.rpc import Endpoint
from boss_sidecar.samples import ObjectRef, Query, Reply, Sample, normalise_payload
from boss_sidecar.states import SidecarState, StateChange
from boss_sidecar.stopping import FLUSH_SHARE
from boss_sidecar.supervisor import ProcessBackend, Supervisor
from boss_sidecar.template import default_backend
from boss_sidecar.worker_api import DECLARE, Op

_log = get_logger("boss_sidecar.sidecar")
_live: weakref.WeakSet[Sidecar] = weakref.WeakSet()
MAX_PUT_BATCH_BYTES = 8 * 1024 * 1024
MAX_BATCHES_IN_FLIGHT = 4
"""Put batches sent and not yet confirmed at most: enough to keep the worker busy while the next one
travels, few enough that a worker that freezes holds only these; the rest wait for the next worker."""


def zenoh_config_source(config: dict[str, Any] | str | os.PathLike[str] | None) -> tuple[str, str | None]:
    """How the worker should load the zenoh configuration; checked here so errors come early."""
    if config is None:
        return ("env", None) if "HEROS_ZENOH_CONFIG" in os.environ else ("default", None)
    if isinstance(config, dict):
        try:
            return ("json", json.dumps(config))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"zenoh configuration must be JSON-serialisable: {exc}") from None
    if isinstance(config, str | os.PathLike):
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"zenoh configuration file {str(path)!r} does not exist")
        return ("file", str(path.resolve()))
    raise ConfigError(f"zenoh configuration must be a dict, a file path or None, got {type(config).__name__}")


# The put path reads these names; they live in the shared core.
_check_key, _options, _shared_put_options = check_key, options, shared_put_options


class _Batch(NamedTuple):
    """Puts sent to a worker and not yet confirmed by it."""

    endpoint: Endpoint
    seq: int
    puts: int


@dataclass(eq=False)
class Declaration:
    """A ledger entry and the user's handle: ``close()`` undeclares it in the worker."""

    core: SidecarCore
    kind: str
    decl_id: int
    key_expr: str
    arguments: tuple[Any, ...] = ()
    delivery: Delivery[Any] | None = None
    closed: bool = field(default=False)

    def request(self) -> Request:
        return Request(DECLARE[self.kind], (self.decl_id, self.key_expr, *self.arguments), None)

    def declare(self, endpoint: Endpoint, timeout: float | None = None) -> None:
        request = self.request()
        endpoint.request(request.method, request.args, timeout=timeout)

    def close(self) -> None:
        """Undeclare (best effort if the worker is gone) and end delivery; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.core.undeclare(self.decl_id)
        if self.delivery is not None:
            self.delivery.close()

    def __enter__(self) -> Declaration:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key_expr!r} of {self.core.name}>"


_D = TypeVar("_D", bound=Declaration)


class Subscription(Declaration):
    """Samples of a key expression: to a callback, or iterate (``for sample in sub``)."""

    def recv(self, timeout: float | None = None) -> Sample:
        """The next sample (iterator form only); ``queue.Empty`` after ``timeout``."""
        if not isinstance(self.delivery, QueueDelivery):
            raise TypeError("recv() is for subscriptions made without a callback")
        item: Sample = self.delivery.recv(timeout)
        return item

    def __iter__(self) -> Iterator[Sample]:
        if not isinstance(self.delivery, QueueDelivery):
            raise TypeError("iterate only subscriptions made without a callback")
        return iter(self.delivery)


class Queryable(Declaration):
    """Queries on a key expression, answered by the host-side handler."""


class LivelinessToken(Declaration):
    """Announces this sidecar's liveliness on a key expression until closed."""


class SupervisedFacts:
    """What both proxies report about their worker, read from the one supervisor they share."""

    _supervisor: Supervisor

    @property
    def state(self) -> SidecarState:
        return self._supervisor.state

    @property
    def pid(self) -> int | None:
        """The worker's process id, or None when no worker runs."""
        return self._supervisor.pid

    @property
    def incarnation(self) -> int:
        """How many workers were started so far (1 for the first)."""
        return self._supervisor.incarnation

    def health(self) -> Health:
        return self._supervisor.health()

    def on_state_change(self, hook: Callable[[StateChange], None]) -> None:
        """``hook(change)`` after every state change (change.old, .new, .reason)."""
        self._supervisor.on_state_change(hook)

    def on_restart(self, hook: Callable[[int, str], None]) -> None:
        """``hook(incarnation, reason)`` after every restart, once the ledger is replayed."""
        self._supervisor.on_restart(hook)


class Sidecar(SupervisedFacts):
    """A supervised worker process that owns a zenoh session, and the proxy to talk to it.

    ``zenoh`` is a configuration dict, a json5 file path, or None (``HEROS_ZENOH_CONFIG`` if set,
    else zenoh's defaults). Keyword options are the supervision policy (see SidecarPolicy).
    """

    def __init__(
        self,
        name: str = "sidecar",
        zenoh: dict[str, Any] | str | os.PathLike[str] | None = None,
        *,
        backend: ProcessBackend | None = None,
        **policy: Any,
    ) -> None:
        self.name = check_name(name)
        self.policy = SidecarPolicy.from_options(policy)
        self._put_errors: list[str] = []
        self._unconfirmed = 0  # puts handed to a worker that ended before confirming them
        self._in_flight: collections.deque[_Batch] = collections.deque()  # sent, not yet confirmed
        self._batch_numbers = itertools.count(1)
        self._puts: list[tuple[str, bytes, dict[str, Any] | None]] = []
        self._puts_size = 0
        self._put_cond = threading.Condition()
        self._flusher: threading.Thread | None = None
        self._flushing = False
        self._closing = False
        self._log = _log.bind(sidecar=name)
        self.core = SidecarCore(
            name,
            self.policy,
            zenoh_config_source(zenoh),
            backend=backend if backend is not None else default_backend(self.policy),
            check_puts=self._raise_put_errors,
            put_failed=self._put_failed,
            puts_done=self._confirm_batches,
        )
        """What Sidecar and AsyncSidecar share (internal: not a stable API)."""
        self._supervisor = self.core.supervisor
        # A worker ended: its unconfirmed batches are counted before the next call can run.
        self._supervisor.on_state_change(lambda _change: self._settle_batches())
        _live.add(self)

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Sidecar:
        """Start the worker and wait until it is ready (session open, ledger replayed).

        After a stop() that was interrupted (Ctrl-C), this finishes that stop first.
        """
        if self._supervisor.state == SidecarState.STOPPING:
            self.stop()
        self._closing = False
        self._supervisor.start()
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(target=self._flush_loop, name=f"{self.name}-puts", daemon=True)
            self._flusher.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop within ``timeout`` (default: the policy's stop_timeout), escalating as needed.

        Pending puts are sent first, declarations undeclared and the zenoh session closed by the
        worker; if it does not exit in time it gets SIGTERM, then SIGKILL. Always returns in time,
        whatever user callbacks do; after an interrupted stop (Ctrl-C) a second one finishes it.
        The sequence and its shares of the time: ``boss_sidecar.stopping``.
        """
        seconds = self.policy.stop_timeout if timeout is None else timeout
        deadline = time.monotonic() + seconds
        if self._supervisor.state == SidecarState.RUNNING:
            with contextlib.suppress(SidecarError):
                self.flush(timeout=seconds * FLUSH_SHARE)
        self._closing = True
        with self._put_cond:
            self._put_cond.notify_all()
        self._supervisor.stop(max(0.0, deadline - time.monotonic()))
        self.core.end_declarations(deadline)  # iterators finish; restart() keeps the declarations instead

    def _rpc_stop(self) -> None:
        """BOSS's name: ask the worker to undeclare everything, close zenoh and exit 0."""
        self.stop()

    def restart(self, timeout: float | None = None) -> None:
        """Replace the worker now; declarations and hosted objects are set up again."""
        self._supervisor.restart("restart requested", timeout)

    def __enter__(self) -> Sidecar:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def info(self, timeout: float | None = None) -> dict[str, Any]:
        """zid of the worker's session and the zids of its peers and routers."""
        result: dict[str, Any] = self.core.run(self.core.info_request(timeout))
        return result

    def _call(self, method: str, args: tuple[Any, ...] = (), timeout: float | None = None) -> Any:
        return self.core.call(method, args, timeout)

    @property
    def queued_puts(self) -> int:
        """Puts accepted and not yet handed to the worker (at most the policy's put_buffer)."""
        return len(self._puts)

    # ----------------------------------------------------------------- publishing
    def put(
        self,
        key_expr: str,
        payload: bytes | str,
        *,
        encoding: str | None = None,
        congestion_control: str | None = None,
        priority: str | None = None,
        express: bool | None = None,
        attachment: bytes | str | None = None,
    ) -> None:
        """Publish without waiting (like zenoh's put); failures surface on the next call or flush.

        congestion_control: "drop" | "block" | "block_first"; priority: a zenoh Priority name
        such as "data" or "real_time" (case-insensitive).
        """
        self._raise_put_errors()
        if type(payload) is not bytes:  # the common case skips building the error text
            payload = normalise_payload(payload, f"put {key_expr!r}")
        options: dict[str, Any] | None = None
        if attachment is None and (encoding, congestion_control, priority, express) != (None, None, None, None):
            try:
                options = _shared_put_options(encoding, congestion_control, priority, express)
            except TypeError:  # an unhashable value: the worker names it
                options = _options(
                    encoding=encoding, congestion_control=congestion_control, priority=priority, express=express
                )
        elif attachment is not None:
            options = _options(
                encoding=encoding,
                congestion_control=congestion_control,
                priority=priority,
                express=express,
                attachment=attachment,
            )
        item = (_check_key(key_expr, "put"), payload, options)
        with self._put_cond:
            if len(self._puts) >= self.policy.put_buffer and not self._put_cond.wait_for(
                lambda: len(self._puts) < self.policy.put_buffer or self._closing, timeout=self.policy.call_timeout
            ):
                raise CallTimeout(f"{self.name}: put buffer full for {self.policy.call_timeout:g}s")
            if self._closing:
                raise SidecarUnavailable(f"{self.name} is stopped")
            self._puts.append(item)
            self._puts_size += len(item[1]) + len(key_expr)
            if len(self._puts) == 1:
                self._put_cond.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every earlier put reached the worker and ran; raise the first put error.

        ``PutsUnconfirmed`` says exactly how many puts went to a worker that ended before
        confirming them (each may or may not have been published); puts not yet handed over when
        a worker ended go to the next one, in order.
        """
        seconds = self.policy.call_timeout if timeout is None else timeout
        with self._put_cond:
            if not self._put_cond.wait_for(lambda: not self._puts and not self._flushing, timeout=seconds):
                raise CallTimeout(f"{self.name}: puts not sent within {seconds:g}s")
        self._settle_batches()
        try:
            self._call(Op.SYNC, (), seconds)  # the worker confirmed and reported every earlier batch before this
        except SidecarError:
            self._settle_batches()
            self._raise_put_errors()
            raise
        self._raise_put_errors()

    def _raise_put_errors(self) -> None:
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

    def _confirm_batches(self, seq: int) -> None:
        with self._put_cond:
            while self._in_flight and self._in_flight[0].seq <= seq:
                self._in_flight.popleft()
            self._put_cond.notify_all()

    def _settle_batches(self) -> None:
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
                endpoint = self._supervisor.endpoint(self.policy.call_timeout)
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
                self._settle_batches()

    def _drop_queued(self, error: SidecarError) -> None:
        """The sidecar stopped or failed: queued puts have nowhere to go; say so, never silently."""
        with self._put_cond:
            dropped, self._puts, self._puts_size = len(self._puts), [], 0
            if dropped:
                self._put_errors.append(f"{dropped} puts not sent: {error}")
            self._put_cond.notify_all()
        if dropped:
            self._log.warning("puts not sent", count=dropped, error=str(error))

    def _put_failed(self, errors: list[str]) -> None:
        with self._put_cond:  # the reader thread reports them; the flusher adds its own
            self._put_errors.extend(errors)

    def _take_batch(self) -> list[tuple[str, bytes, dict[str, Any] | None]]:
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

    def delete(
        self,
        key_expr: str,
        *,
        congestion_control: str | None = None,
        priority: str | None = None,
        express: bool | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish a deletion of ``key_expr`` (after every earlier put)."""
        self.flush(timeout)
        self.core.run(self.core.delete_request(key_expr, congestion_control, priority, express, timeout))

    def get(
        self,
        selector: str,
        payload: bytes | str | None = None,
        *,
        timeout: float = 10.0,
        target: str | None = None,
        encoding: str | None = None,
        attachment: bytes | str | None = None,
    ) -> list[Reply]:
        """Query and return every reply (error replies too, with ``ok`` False) within ``timeout``.

        target: "best_matching" (zenoh's default) | "all" | "all_complete".
        """
        request = self.core.get_request(
            selector, payload, timeout=timeout, target=target, encoding=encoding, attachment=attachment
        )
        replies: list[Reply] = self.core.run(request)
        return replies

    # ----------------------------------------------------------------- declarations
    def subscribe(self, key_expr: str, callback: Callable[[Sample], Any] | None = None) -> Subscription:
        """Receive samples: ``callback(sample)`` runs in order on its own thread, or iterate the handle."""
        return self.core.declare(self._declaration(Subscription, "subscriber", key_expr, (), callback))

    def liveliness_subscribe(
        self, key_expr: str, callback: Callable[[Sample], Any] | None = None, *, history: bool = False
    ) -> Subscription:
        """Token appearances (kind "put") and disappearances (kind "delete") on ``key_expr``."""
        declaration = self._declaration(Subscription, "liveliness_subscriber", key_expr, (history,), callback)
        return self.core.declare(declaration)

    def queryable(self, key_expr: str, handler: Callable[[Query], Any], *, complete: bool = False) -> Queryable:
        """Answer queries in the host: ``handler(query)`` returns the reply payload (bytes or str),
        a QueryReply or a list of them, or None for no reply; what it raises becomes an error reply.
        """
        key = check_key(key_expr, "queryable")

        def answer(item: tuple[int, Query]) -> None:
            query_id, query = item
            try:
                result = handler(query)
            except Exception as exc:
                self.core.send_answer(key, query_id, query, None, exc)
            else:
                self.core.send_answer(key, query_id, query, result, None)

        delivery = self._delivery(answer, key_expr)
        return self.core.declare(Queryable(self.core, "queryable", next(ids), key, (complete,), delivery))

    def liveliness_token(self, key_expr: str) -> LivelinessToken:
        """Declare a liveliness token (declared again on each new worker)."""
        key = check_key(key_expr, "token")
        return self.core.declare(LivelinessToken(self.core, "token", next(ids), key, (), None))

    def liveliness_get(self, key_expr: str, timeout: float = 10.0) -> list[str]:
        """Key expressions of the liveliness tokens alive now."""
        result: list[str] = self.core.run(self.core.liveliness_get_request(key_expr, timeout))
        return result

    def _declaration(
        self,
        cls: type[_D],
        kind: str,
        key_expr: str,
        arguments: tuple[Any, ...],
        callback: Callable[[Sample], Any] | None,
    ) -> _D:
        key = check_key(key_expr, kind)
        return cls(self.core, kind, next(ids), key, arguments, self._delivery(callback, key_expr))

    def _delivery(self, callback: Callable[[Any], Any] | None, key_expr: str) -> Delivery[Any]:
        name, limit = f"{self.name}:{key_expr}", self.policy.subscription_backlog
        if callback is None:
            return QueueDelivery(limit=limit, name=name)
        return CallbackDelivery(callback, name, limit=limit, stuck_after=self.policy.stuck_callback_after)

    # ----------------------------------------------------------------- hosted objects
    def host(self, classname: str | dict[str, Any], *args: Any, **kwargs: Any) -> HostedObject:
        """Instantiate a class in the worker and return its proxy.

        ``classname`` is "pkg.mod:Class" or "pkg.mod.Class", or BOSS's configuration document
        ``{"_id": name, "classname": ..., "arguments": {...}}`` (``_id`` is passed as ``name``
        when the class takes one and the arguments do not). Replayed after each restart. Every
        public name of the object reaches it; drop it with ``boss_sidecar.drop(proxy)``.
        """
        obj_id, shape = self.core.host(classname, args, kwargs)
        return HostedObject(self.core, obj_id, shape)

    def expose(self, obj: object) -> ObjectRef:
        """A reference to pass to hosted objects so they can call ``obj``'s public methods."""
        return self.core.expose(obj)


def _stop_all_at_exit() -> None:
    """A host that never called stop still exits promptly and leaves no worker behind."""
    for sidecar in list(_live):
        if sidecar._supervisor.owned_by_this_process and sidecar.state != SidecarState.STOPPED:
            with contextlib.suppress(Exception):
                sidecar.stop(timeout=min(sidecar.policy.stop_timeout, 3.0))


def _after_fork_in_child() -> None:
    for sidecar in list(_live):
        sidecar._closing = True  # no flusher thread here: a put must fail, not pile up
        sidecar._supervisor.forget_after_fork()


atexit.register(_stop_all_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
