"""``Sidecar``: the host's handle on a supervised zenoh worker, used as if zenoh were local.

The host never imports zenoh. Declarations are kept in a ledger and declared again on every new
worker, so callbacks keep firing across restarts. Puts are fire-and-forget and coalesced: a
flusher thread sends whatever piled up as one message, so a put costs no round trip (``_puts``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from boss_sidecar._core import Request, SidecarCore, check_key, check_name, ids, options, shared_put_options
from boss_sidecar._puts import PutPipeline
from boss_sidecar.delivery import CallbackDelivery, Delivery, QueueDelivery
from boss_sidecar.errors import ConfigError, SidecarError
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
        self._log = _log.bind(sidecar=name)
        self._put_pipeline = PutPipeline(
            self.name,
            self.policy,
            self._log,
            endpoint=lambda timeout: self._supervisor.endpoint(timeout),  # noqa: PLW0108 (made with the core, below)
            sync=lambda timeout: self._call(Op.SYNC, (), timeout),
        )
        self.core = SidecarCore(
            name,
            self.policy,
            zenoh_config_source(zenoh),
            backend=backend if backend is not None else default_backend(self.policy),
            check_puts=self._put_pipeline.raise_errors,
            put_failed=self._put_pipeline.put_failed,
            puts_done=self._put_pipeline.confirm_batches,
        )
        """What Sidecar and AsyncSidecar share (internal: not a stable API)."""
        self._supervisor = self.core.supervisor
        # A worker ended: its unconfirmed batches are counted before the next call can run.
        self._supervisor.on_state_change(lambda _change: self._put_pipeline.settle_batches())
        _live.add(self)

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Sidecar:
        """Start the worker and wait until it is ready (session open, ledger replayed).

        After a stop() that was interrupted (Ctrl-C), this finishes that stop first.
        """
        if self._supervisor.state == SidecarState.STOPPING:
            self.stop()
        self._put_pipeline.open()
        self._supervisor.start()
        self._put_pipeline.start_flusher()
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
        self._put_pipeline.close()
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
        return self._put_pipeline.queued

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
        self._put_pipeline.raise_errors()
        if type(payload) is not bytes:  # the common case skips building the error text
            payload = normalise_payload(payload, f"put {key_expr!r}")
        chosen: dict[str, Any] | None = None
        if attachment is None and (encoding, congestion_control, priority, express) != (None, None, None, None):
            try:
                chosen = shared_put_options(encoding, congestion_control, priority, express)
            except TypeError:  # an unhashable value: the worker names it
                chosen = options(
                    encoding=encoding, congestion_control=congestion_control, priority=priority, express=express
                )
        elif attachment is not None:
            chosen = options(
                encoding=encoding,
                congestion_control=congestion_control,
                priority=priority,
                express=express,
                attachment=attachment,
            )
        self._put_pipeline.add((check_key(key_expr, "put"), payload, chosen))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every earlier put reached the worker and ran; raise the first put error.

        ``PutsUnconfirmed`` says exactly how many puts went to a worker that ended before
        confirming them (each may or may not have been published); puts not yet handed over when
        a worker ended go to the next one, in order.
        """
        self._put_pipeline.flush(self.policy.call_timeout if timeout is None else timeout)

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
        sidecar._put_pipeline.forget_after_fork()
        sidecar._supervisor.forget_after_fork()


atexit.register(_stop_all_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
