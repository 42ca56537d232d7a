"""``Sidecar``: the host's handle on a supervised zenoh worker, used as if zenoh were local.

The host never imports zenoh. Declarations are kept in a ledger and declared again on every new
worker, so callbacks keep firing across restarts. Puts are fire-and-forget and coalesced: a
flusher thread sends whatever piled up as one message, so a put costs no round trip.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import json
import operator
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import structlog

from boss_sidecar.delivery import CallbackDelivery, Delivery, QueueDelivery
from boss_sidecar.errors import CallTimeout, ConfigError, SidecarError, SidecarUnavailable
from boss_sidecar.health import Health
from boss_sidecar.policy import SidecarPolicy
from boss_sidecar.rpc import Endpoint
from boss_sidecar.samples import ObjectRef, Query, QueryReply, Reply, Sample, SampleRun, normalise_payload, samples_of
from boss_sidecar.states import SidecarState, StateChange
from boss_sidecar.supervisor import ProcessBackend, Supervisor
from boss_sidecar.template import default_backend

_log = structlog.get_logger("boss_sidecar")
_ids = itertools.count(1)
_live: weakref.WeakSet[Sidecar] = weakref.WeakSet()
MAX_PUT_BATCH_BYTES = 8 * 1024 * 1024


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
        endpoint.request(f"declare_{self.kind}", (self.decl_id, self.key_expr, *self.arguments), timeout=timeout)

    def close(self) -> None:
        """Undeclare (best effort if the worker is gone) and end delivery; safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.sidecar._forget(self)
        with contextlib.suppress(SidecarError):
            self.sidecar._call("undeclare", (self.decl_id,))
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
        return self._sidecar._call("get_object_attribute", (self._obj_id, name))

    def _method(self, name: str) -> Callable[..., Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<hosted {self._class} #{self._obj_id} in sidecar {self._sidecar.name}>"


class HostedObject(_HostedProxy):
    """Proxy of an object living in the worker: method calls, reads and writes run there."""

    def _method(self, name: str) -> Callable[..., Any]:
        def method(*args: Any, **kwargs: Any) -> Any:
            return self._sidecar._call("call_object", (self._obj_id, name, args, kwargs))

        return method

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            raise AttributeError(f"cannot set private attribute {name!r} of a hosted object")
        self._sidecar._call("set_object_attribute", (self._obj_id, name, value))

    def close(self) -> None:
        """Tear the object down in the worker and stop replaying it after restarts."""
        self._sidecar._hosted.pop(self._obj_id, None)
        with contextlib.suppress(SidecarError):
            self._sidecar._call("drop_object", (self._obj_id,))


class _HostServices:
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
        self._sidecar._put_errors.extend(errors)

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
        if not isinstance(name, str) or not name:
            raise ConfigError(f"sidecar name must be a non-empty str, got {name!r}")
        self.name = name
        self.policy = SidecarPolicy.from_options(policy)
        self._zenoh_source = zenoh_config_source(zenoh)
        self._ledger: dict[int, Declaration] = {}
        self._hosted: dict[int, HostingSpec] = {}
        self._exported: dict[int, object] = {}
        self._put_errors: list[str] = []
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
            backend=backend if backend is not None else default_backend(self.policy),
        )
        _live.add(self)

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Sidecar:
        """Start the worker and wait until it is ready (session open, ledger replayed)."""
        self._closing = False
        self._supervisor.start()
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(target=self._flush_loop, name=f"{self.name}-puts", daemon=True)
            self._flusher.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop within ``timeout`` (default: the policy's stop_timeout), escalating as needed.

        Pending puts are sent first, declarations undeclared and the zenoh session closed by the
        worker; if it does not exit in time it gets SIGTERM, then SIGKILL. Always returns in time.
        """
        seconds = self.policy.stop_timeout if timeout is None else timeout
        if self._supervisor.state == SidecarState.RUNNING:
            with contextlib.suppress(SidecarError):
                self.flush(timeout=seconds * 0.25)
        self._closing = True
        with self._put_cond:
            self._put_cond.notify_all()
        self._supervisor.stop(seconds * 0.75 if self._supervisor.state == SidecarState.RUNNING else seconds)
        # Every declaration ends with the sidecar (iterators finish); restart() keeps them instead.
        ledger, self._ledger = self._ledger, {}
        self._hosted.clear()
        for declaration in ledger.values():
            declaration.closed = True
            if declaration.delivery is not None:
                declaration.delivery.close()

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
        result: dict[str, Any] = self._run(_Request("info", (), timeout))
        return result

    def _prepare(self, endpoint: Endpoint) -> None:
        """Make a new worker ready: open its session, declare the ledger, host the objects again."""
        timeout = self.policy.start_timeout
        endpoint.request("open_session", self._zenoh_source, timeout=timeout)
        for declaration in list(self._ledger.values()):
            declaration.declare(endpoint, timeout)
        for obj_id, spec in list(self._hosted.items()):
            endpoint.request("host_object", (obj_id, *spec), timeout=timeout)

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
        """Wait until every earlier put reached the worker and ran; raise the first put error."""
        seconds = self.policy.call_timeout if timeout is None else timeout
        with self._put_cond:
            if not self._put_cond.wait_for(lambda: not self._puts and not self._flushing, timeout=seconds):
                raise CallTimeout(f"{self.name}: puts not sent within {seconds:g}s")
        self._call("sync", (), seconds)
        self._raise_put_errors()  # the worker reported them before it answered the sync

    def _raise_put_errors(self) -> None:
        if self._put_errors:
            # Copy, then delete that many: the reader thread may append meanwhile; nothing is lost.
            errors = self._put_errors[:]
            del self._put_errors[: len(errors)]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise SidecarError(f"{self.name}: {errors[0]}{more}")

    def _flush_loop(self) -> None:
        """Send queued puts as batches; while one batch is on the wire the next one grows."""
        while True:
            with self._put_cond:
                self._put_cond.wait_for(lambda: bool(self._puts) or self._closing)
                if not self._puts and self._closing:
                    return
                batch = self._take_batch()
                self._flushing = True
                self._put_cond.notify_all()
            try:
                self._supervisor.endpoint(self.policy.call_timeout).notify("put_batch", batch)
            except SidecarError as exc:
                self._put_errors.append(f"{len(batch)} puts lost: {exc}")
            finally:
                with self._put_cond:
                    self._flushing = False
                    self._put_cond.notify_all()

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
        return _Request("delete", (_check_key(key_expr, "delete"), options), timeout)

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
            "get",
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

        queryable = self._declare(
            Queryable, "queryable", key_expr, (complete,), CallbackDelivery(answer, f"{self.name}:{key_expr}")
        )
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
        return _Request("liveliness_get", (key, timeout), timeout + self.policy.call_timeout)

    def _delivery(self, callback: Callable[[Sample], Any] | None, key_expr: str) -> Delivery[Sample]:
        if callback is None:
            return QueueDelivery()
        return CallbackDelivery(callback, f"{self.name}:{key_expr}")

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
            self._supervisor.endpoint(self.policy.call_timeout).notify("reply", query_id, replies, error)

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
        shape = self._call("host_object", (obj_id, *spec))
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
