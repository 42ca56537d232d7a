"""``Sidecar``: the host's handle on a supervised zenoh worker, used as if zenoh were local.

The host never imports zenoh. Declarations are kept in a ledger and declared again on every new
worker, so callbacks keep firing across restarts. Puts are fire-and-forget and coalesced: a
flusher thread sends whatever piled up as one message, so a put costs no round trip.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import itertools
import json
import operator
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import structlog

from boss_sidecar.delivery import CallbackDelivery, Delivery, QueueDelivery
from boss_sidecar.errors import CallTimeout, ConfigError, PutsUnconfirmed, SidecarError, SidecarUnavailable
from boss_sidecar.health import Health
from boss_sidecar.policy import SidecarPolicy
from boss_sidecar.rpc import Endpoint
from boss_sidecar.samples import ObjectRef, Query, QueryReply, Reply, Sample, SampleRun, normalise_payload, samples_of
from boss_sidecar.states import SidecarState, StateChange
from boss_sidecar.stopping import FLUSH_SHARE
from boss_sidecar.supervisor import ProcessBackend, Supervisor
from boss_sidecar.worker_api import DECLARE, HostApi, Op

_log = structlog.get_logger("boss_sidecar")
_ids = itertools.count(1)
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


def check_name(name: object) -> str:
    """A sidecar's name: any text a command line and a log can carry (it is never read as an option)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"sidecar name must be a non-empty str, got {name!r}")
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise ConfigError(f"sidecar name must not contain NUL or other control characters, got {name!r}")
    try:
        os.fsencode(name)
    except UnicodeError:
        raise ConfigError(f"sidecar name cannot be passed to a process (not encodable), got {name!r}") from None
    return name


def _check_key(key_expr: object, what: str) -> str:
    """Catch the obvious key-expression mistakes here; the worker's zenoh checks the rest."""
    if not isinstance(key_expr, str) or not key_expr:
        raise ValueError(f"{what}: key expression must be a non-empty str, got {key_expr!r}")
    if key_expr.startswith("/") or key_expr.endswith("/") or "//" in key_expr or "?" in key_expr or "#" in key_expr:
        raise ValueError(
            f"{what}: invalid key expression {key_expr!r} (no leading, trailing or double '/', no '?' or '#')"
        )
    return key_expr


def _options(**options: Any) -> dict[str, Any] | None:
    given = {key: value for key, value in options.items() if value is not None}
    if isinstance(given.get("attachment"), str):
        given["attachment"] = given["attachment"].encode()
    return given or None


@functools.lru_cache(maxsize=64)
def _shared_put_options(
    encoding: str | None, congestion_control: str | None, priority: str | None, express: bool | None
) -> dict[str, Any] | None:
    """One dict per combination, never changed: a batch of puts pickles it once, the worker converts it once."""
    return _options(encoding=encoding, congestion_control=congestion_control, priority=priority, express=express)


class _Batch(NamedTuple):
    """Puts sent to a worker and not yet confirmed by it."""

    endpoint: Endpoint
    seq: int
    puts: int


class _Request(NamedTuple):
    """One remote operation, built once and run by the sync or the async proxy."""

    method: str
    args: tuple[Any, ...]
    timeout: float | None
    convert: Callable[[Any], Any] | None = None


@dataclass(eq=False)
class Declaration:
    """A ledger entry and the user's handle: ``close()`` undeclares it in the worker."""

    sidecar: Sidecar
    kind: str
    decl_id: int
    key_expr: str
    arguments: tuple[Any, ...] = ()
    delivery: Delivery[Any] | None = None
    closed: bool = field(default=False)

    def declare(self, endpoint: Endpoint, timeout: float | None = None) -> None:
        endpoint.request(DECLARE[self.kind], (self.decl_id, self.key_expr, *self.arguments), timeout=timeout)

    def close(self) -> None:
        """Undeclare (best effort if the worker is gone) and end delivery; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.sidecar._forget(self)
        with contextlib.suppress(SidecarError):
            self.sidecar._call(Op.UNDECLARE, (self.decl_id,))
        if self.delivery is not None:
            self.delivery.close()

    def __enter__(self) -> Declaration:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key_expr!r} of {self.sidecar.name}>"


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


class _HostedProxy:
    """What the sync and async proxies of a hosted object share: its number and class, the methods
    the worker reported, and reads (through ``_call``: a value from a Sidecar, an awaitable from an
    AsyncSidecar). Subclasses say how a method is called."""

    def __init__(self, sidecar: Any, obj_id: int, shape: dict[str, Any]) -> None:
        object.__setattr__(self, "_sidecar", sidecar)
        object.__setattr__(self, "_obj_id", obj_id)
        object.__setattr__(self, "_methods", frozenset(shape["methods"]))
        object.__setattr__(self, "_class", shape["class"])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._methods:
            method = self._method(name)
            method.__name__ = name
            return method
        return self._sidecar._call(Op.GET_OBJECT_ATTRIBUTE, (self._obj_id, name))

    def _method(self, name: str) -> Callable[..., Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<hosted {self._class} #{self._obj_id} in sidecar {self._sidecar.name}>"


class HostedObject(_HostedProxy):
    """Proxy of an object living in the worker: method calls, reads and writes run there."""

    def _method(self, name: str) -> Callable[..., Any]:
        def method(*args: Any, **kwargs: Any) -> Any:
            return self._sidecar._call(Op.CALL_OBJECT, (self._obj_id, name, args, kwargs))

        return method

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            raise AttributeError(f"cannot set private attribute {name!r} of a hosted object")
        self._sidecar._call(Op.SET_OBJECT_ATTRIBUTE, (self._obj_id, name, value))

    def close(self) -> None:
        """Tear the object down in the worker and stop replaying it after restarts."""
        self._sidecar._hosted.pop(self._obj_id, None)
        with contextlib.suppress(SidecarError):
            self._sidecar._call(Op.DROP_OBJECT, (self._obj_id,))


class _HostServices(HostApi):
    """What the worker may call in the host: deliveries, log records and reverse calls."""

    def __init__(self, sidecar: Sidecar) -> None:
        self._sidecar = sidecar

    def samples(self, runs: list[SampleRun]) -> None:
        """Consecutive runs of one declaration go to its delivery as one hand-off: the worker sends
        a run per batch it took from zenoh, often several per message, and each hand-off wakes the
        delivery's thread."""
        ledger = self._sidecar._ledger
        for decl_id, group in itertools.groupby(runs, key=operator.itemgetter(0)):
            declaration = ledger.get(decl_id)
            if declaration is not None and declaration.delivery is not None:
                samples = samples_of(next(group))
                for run in group:
                    samples += samples_of(run)
                declaration.delivery.put_many(samples)

    def queries(self, items: list[tuple[Any, ...]]) -> None:
        ledger = self._sidecar._ledger
        for decl_id, query_id, *fields in items:
            declaration = ledger.get(decl_id)
            if declaration is not None and declaration.delivery is not None:
                declaration.delivery.put((query_id, Query(*fields)))

    def put_failed(self, errors: list[str]) -> None:
        with self._sidecar._put_cond:
            self._sidecar._put_errors.extend(errors)

    def puts_done(self, seqs: list[int]) -> None:
        """The worker handed these batches (and all before them) to zenoh."""
        self._sidecar._confirm_batches(max(seqs))

    def logs(self, records: list[dict[str, Any]]) -> None:
        self._sidecar._emit_worker_logs(records)

    def call_exported(self, ref_id: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        target = self._sidecar._exported.get(ref_id)
        if target is None:
            raise LookupError(f"no exported host object #{ref_id}")
        if not method.isidentifier() or method.startswith("_"):
            raise AttributeError(f"{method!r} is not exposed (only public names of exported objects are)")
        return getattr(target, method)(*args, **kwargs)


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
        self._zenoh_source = zenoh_config_source(zenoh)
        self._ledger: dict[int, Declaration] = {}
        self._hosted: dict[int, HostingSpec] = {}
        self._exported: dict[int, object] = {}
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
        self._supervisor = Supervisor(
            name,
            self.policy,
            target=_HostServices(self),
            prepare=self._prepare,
            backend=backend,
            host_health=self._deliveries_health,
        )
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
        # Every declaration ends with the sidecar (iterators finish); restart() keeps them instead.
        ledger, self._ledger = self._ledger, {}
        self._hosted.clear()
        deliveries = [declaration.delivery for declaration in ledger.values() if declaration.delivery is not None]
        for declaration in ledger.values():
            declaration.closed = True
        for delivery in deliveries:
            delivery.close(wait=False)
        for delivery in deliveries:  # one deadline for all: a stuck callback is left behind, not waited for
            delivery.join(max(0.0, deadline - time.monotonic()))

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
        result: dict[str, Any] = self._run(_Request(Op.INFO, (), timeout))
        return result

    def _prepare(self, endpoint: Endpoint, deadline: float) -> None:
        """Make a new worker ready by ``deadline``: open its session, declare the ledger, host the objects again."""

        def left() -> float:
            seconds = deadline - time.monotonic()
            if seconds <= 0:
                raise CallTimeout("no time left to set the worker up")
            return seconds

        endpoint.request(Op.OPEN_SESSION, self._zenoh_source, timeout=left())
        for declaration in list(self._ledger.values()):
            declaration.declare(endpoint, left())
        for obj_id, spec in list(self._hosted.items()):
            endpoint.request(Op.HOST_OBJECT, (obj_id, *spec), timeout=left())

    def _run(self, request: _Request) -> Any:
        result = self._call(request.method, request.args, request.timeout)
        return result if request.convert is None else request.convert(result)

    def _call(self, method: str, args: tuple[Any, ...] = (), timeout: float | None = None) -> Any:
        self._raise_put_errors()
        seconds = self.policy.call_timeout if timeout is None else timeout
        endpoint = self._supervisor.endpoint(seconds)
        return endpoint.request(method, args, timeout=seconds)

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
        self._run(self._delete_request(key_expr, congestion_control, priority, express, timeout))

    def _delete_request(
        self,
        key_expr: str,
        congestion_control: str | None,
        priority: str | None,
        express: bool | None,
        timeout: float | None,
    ) -> _Request:
        options = _options(congestion_control=congestion_control, priority=priority, express=express)
        return _Request(Op.DELETE, (_check_key(key_expr, "delete"), options), timeout)

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
        replies: list[Reply] = self._run(
            self._get_request(
                selector, payload, timeout=timeout, target=target, encoding=encoding, attachment=attachment
            )
        )
        return replies

    def _get_request(
        self,
        selector: str,
        payload: bytes | str | None,
        *,
        timeout: float,
        target: str | None,
        encoding: str | None,
        attachment: bytes | str | None,
    ) -> _Request:
        if not isinstance(selector, str) or not selector:
            raise ValueError(f"get: selector must be a non-empty str, got {selector!r}")
        options = _options(
            payload=None if payload is None else normalise_payload(payload, f"get {selector!r}"),
            timeout=timeout,
            target=target,
            encoding=encoding,
            attachment=attachment,
        )
        return _Request(
            Op.GET,
            (selector, options or {}),
            timeout + self.policy.call_timeout,
            lambda replies: [Reply(*reply) for reply in replies],
        )

    # ----------------------------------------------------------------- declarations
    def subscribe(self, key_expr: str, callback: Callable[[Sample], Any] | None = None) -> Subscription:
        """Receive samples: ``callback(sample)`` runs in order on its own thread, or iterate the handle."""
        return self._declare(Subscription, "subscriber", key_expr, (), self._delivery(callback, key_expr))

    def liveliness_subscribe(
        self, key_expr: str, callback: Callable[[Sample], Any] | None = None, *, history: bool = False
    ) -> Subscription:
        """Token appearances (kind "put") and disappearances (kind "delete") on ``key_expr``."""
        return self._declare(
            Subscription, "liveliness_subscriber", key_expr, (history,), self._delivery(callback, key_expr)
        )

    def queryable(self, key_expr: str, handler: Callable[[Query], Any], *, complete: bool = False) -> Queryable:
        """Answer queries in the host: ``handler(query)`` returns the reply payload (bytes or str),
        a QueryReply or a list of them, or None for no reply; what it raises becomes an error reply.
        """
        _check_key(key_expr, "queryable")
        declaration: list[Queryable] = []

        def answer(item: tuple[int, Query]) -> None:
            self._answer(declaration[0], *item, handler)

        queryable = self._declare(Queryable, "queryable", key_expr, (complete,), self._delivery(answer, key_expr))
        declaration.append(queryable)
        return queryable

    def liveliness_token(self, key_expr: str) -> LivelinessToken:
        """Declare a liveliness token (declared again on each new worker)."""
        return self._declare(LivelinessToken, "token", key_expr, (), None)

    def liveliness_get(self, key_expr: str, timeout: float = 10.0) -> list[str]:
        """Key expressions of the liveliness tokens alive now."""
        result: list[str] = self._run(self._liveliness_get_request(key_expr, timeout))
        return result

    def _liveliness_get_request(self, key_expr: str, timeout: float) -> _Request:
        key = _check_key(key_expr, "liveliness_get")
        return _Request(Op.LIVELINESS_GET, (key, timeout), timeout + self.policy.call_timeout)

    def _delivery(self, callback: Callable[[Any], Any] | None, key_expr: str) -> Delivery[Any]:
        name, limit = f"{self.name}:{key_expr}", self.policy.subscription_backlog
        if callback is None:
            return QueueDelivery(limit=limit, name=name)
        return CallbackDelivery(callback, name, limit=limit, stuck_after=self.policy.stuck_callback_after)

    def _deliveries_health(self) -> tuple[tuple[str, ...], int]:
        """Stuck callbacks and dropped items of this sidecar's deliveries, for health()."""
        deliveries = [declaration.delivery for declaration in list(self._ledger.values())]
        stuck = tuple(
            why for delivery in deliveries if isinstance(delivery, CallbackDelivery) and (why := delivery.stuck())
        )
        dropped = sum(
            delivery.backlog.dropped
            for delivery in deliveries
            if isinstance(delivery, CallbackDelivery | QueueDelivery)
        )
        return stuck, dropped

    def _declare(
        self,
        cls: type[_D],
        kind: str,
        key_expr: str,
        arguments: tuple[Any, ...],
        delivery: Delivery[Any] | None,
    ) -> _D:
        declaration = cls(self, kind, next(_ids), _check_key(key_expr, kind), arguments, delivery)
        self._ledger[declaration.decl_id] = declaration
        try:
            endpoint = self._supervisor.endpoint(self.policy.call_timeout)
            declaration.declare(endpoint)
        except BaseException:
            self._ledger.pop(declaration.decl_id, None)
            if delivery is not None:
                delivery.close()
            raise
        return declaration

    def _forget(self, declaration: Declaration) -> None:
        self._ledger.pop(declaration.decl_id, None)

    def _answer(self, queryable: Queryable, query_id: int, query: Query, handler: Callable[[Query], Any]) -> None:
        try:
            result = handler(query)
        except Exception as exc:
            self._send_answer(queryable, query_id, query, None, exc)
        else:
            self._send_answer(queryable, query_id, query, result, None)

    def _send_answer(
        self, queryable: Queryable, query_id: int, query: Query, result: Any, raised: Exception | None
    ) -> None:
        """Turn a handler's result (or exception) into zenoh replies, sent to the worker one-way."""
        replies: list[QueryReply] = []
        error: bytes | None = None
        try:
            if raised is not None:
                raise raised
            items = result if isinstance(result, list | tuple) else [] if result is None else [result]
            for item in items:
                replies.append(item if isinstance(item, QueryReply) else self._reply_to(queryable, query, item))
        except Exception as exc:
            self._log.warning("queryable handler raised", key_expr=queryable.key_expr, error=repr(exc))
            replies, error = [], f"{type(exc).__name__}: {exc}".encode()
        with contextlib.suppress(SidecarError):
            self._supervisor.endpoint(self.policy.call_timeout).notify(Op.REPLY, query_id, replies, error)

    @staticmethod
    def _reply_to(queryable: Queryable, query: Query, payload: Any) -> QueryReply:
        for key in (query.key_expr, queryable.key_expr):
            if "*" not in key and "$" not in key:
                return QueryReply(key, normalise_payload(payload, f"reply to {query.selector!r}"))
        raise ValueError(f"query {query.selector!r} has a wildcard key: return QueryReply(key_expr, payload)")

    # ----------------------------------------------------------------- hosted objects
    def host(self, classname: str | dict[str, Any], *args: Any, **kwargs: Any) -> HostedObject:
        """Instantiate a class in the worker and return its proxy.

        ``classname`` is "pkg.mod:Class" or "pkg.mod.Class", or BOSS's configuration document
        ``{"_id": name, "classname": ..., "arguments": {...}}`` (``_id`` is passed as ``name``
        when the class takes one and the arguments do not). Replayed after each restart.
        """
        obj_id, spec = _hosting_spec(classname, args, kwargs)
        shape = self._call(Op.HOST_OBJECT, (obj_id, *spec))
        self._hosted[obj_id] = spec
        return HostedObject(self, obj_id, shape)

    def expose(self, obj: object) -> ObjectRef:
        """A reference to pass to hosted objects so they can call ``obj``'s public methods."""
        ref = ObjectRef(next(_ids), type(obj).__name__)
        self._exported[ref.ref_id] = obj
        return ref

    # ----------------------------------------------------------------- logs
    def _emit_worker_logs(self, records: list[dict[str, Any]]) -> None:
        """Re-emit worker records in the host; each carries the pid and incarnation that wrote it."""
        for record in records:
            level = str(record.pop("level", "info")).lower()
            event = record.pop("event", "")
            log = self._log.bind(worker_pid=record.pop("worker_pid", None), incarnation=record.pop("incarnation", None))
            emit = getattr(log, {"warn": "warning", "exception": "error"}.get(level, level), log.info)
            emit(event, **record)


HostingSpec = tuple[str, tuple[Any, ...], dict[str, Any], "str | None"]


def _hosting_spec(
    classname: str | dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[int, HostingSpec]:
    """A fresh object id and what the worker needs to build (and rebuild) the object."""
    default_name = None
    if isinstance(classname, dict):
        default_name = classname.get("_id")
        classname, kwargs = _from_boss_document(classname, kwargs)
    if not isinstance(classname, str) or not classname:
        raise ConfigError(f"classname must be a non-empty str, got {classname!r}")
    return next(_ids), (classname, args, kwargs, default_name)


def _from_boss_document(document: dict[str, Any], kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    unknown = set(document) - {"_id", "classname", "arguments"}
    if "classname" not in document:
        raise ConfigError("hosted object document has no 'classname'")
    if unknown:
        raise ConfigError(f"hosted object document has unknown keys: {', '.join(sorted(unknown))}")
    arguments = dict(document.get("arguments") or {})
    arguments.update(kwargs)
    return document["classname"], arguments


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
