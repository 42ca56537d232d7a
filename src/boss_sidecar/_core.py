"""The core ``Sidecar`` and ``AsyncSidecar`` share: each operation built once, run sync or awaited.

It holds the supervisor, the ledger of declarations and hosted objects (replayed on every new worker),
the host objects exposed to the worker, and the requests of every remote operation. The proxies are
thin: a sync method runs a request, an async one awaits the same request. An awaited operation that is
cancelled undoes what it did before the cancellation goes on, so nothing stays declared or hosted
without a handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import operator
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol, TypeVar

from boss_sidecar.delivery import Delivery
from boss_sidecar.errors import CallTimeout, ConfigError, SidecarError
from boss_sidecar.logs import get_logger
from boss_sidecar.policy import SidecarPolicy
from boss_sidecar.rpc import Endpoint
from boss_sidecar.samples import ObjectRef, Query, QueryReply, Reply, SampleRun, normalise_payload, samples_of
from boss_sidecar.supervisor import ProcessBackend, Supervisor
from boss_sidecar.worker_api import HostApi, Op

_log = get_logger("boss_sidecar.sidecar")
ids = itertools.count(1)
"""Declaration, hosted-object and exported-object numbers, unique in this process."""

HostingSpec = tuple[str, tuple[Any, ...], dict[str, Any], "str | None"]


class Request(NamedTuple):
    """One remote operation, built once and run by the sync or the async proxy."""

    method: str
    args: tuple[Any, ...]
    timeout: float | None
    convert: Callable[[Any], Any] | None = None


class Declared(Protocol):
    """What the core needs of a declaration handle (``sidecar.Declaration``)."""

    decl_id: int
    key_expr: str
    delivery: Delivery[Any] | None
    closed: bool

    def declare(self, endpoint: Endpoint, timeout: float | None = None) -> None: ...

    def request(self) -> Request: ...


_D = TypeVar("_D", bound=Declared)


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


def check_key(key_expr: object, what: str) -> str:
    """Catch the obvious key-expression mistakes here; the worker's zenoh checks the rest."""
    if not isinstance(key_expr, str) or not key_expr:
        raise ValueError(f"{what}: key expression must be a non-empty str, got {key_expr!r}")
    if key_expr.startswith("/") or key_expr.endswith("/") or "//" in key_expr or "?" in key_expr or "#" in key_expr:
        raise ValueError(
            f"{what}: invalid key expression {key_expr!r} (no leading, trailing or double '/', no '?' or '#')"
        )
    return key_expr


def options(**given: Any) -> dict[str, Any] | None:
    """The options the caller set (None means zenoh's default), attachments as bytes."""
    chosen = {key: value for key, value in given.items() if value is not None}
    if isinstance(chosen.get("attachment"), str):
        chosen["attachment"] = chosen["attachment"].encode()
    return chosen or None


@functools.lru_cache(maxsize=64)
def shared_put_options(
    encoding: str | None, congestion_control: str | None, priority: str | None, express: bool | None
) -> dict[str, Any] | None:
    """One dict per combination, never changed: a batch of puts pickles it once, the worker converts it once."""
    return options(encoding=encoding, congestion_control=congestion_control, priority=priority, express=express)


class SidecarCore:
    """State and operations of one sidecar, whichever proxy (sync or async) the user holds."""

    def __init__(
        self,
        name: str,
        policy: SidecarPolicy,
        zenoh_source: tuple[str, str | None],
        *,
        backend: ProcessBackend | None,
        check_puts: Callable[[], None],
        put_failed: Callable[[list[str]], None],
        puts_done: Callable[[int], None],
    ) -> None:
        self.name = name
        self.policy = policy
        self.ledger: dict[int, Declared] = {}
        self.hosted: dict[int, HostingSpec] = {}
        self.exported: dict[int, object] = {}
        self._zenoh_source = zenoh_source
        self._check_puts = check_puts
        self._cleanups: set[asyncio.Future[None]] = set()
        self._log = _log.bind(sidecar=name)
        self.supervisor = Supervisor(
            name,
            policy,
            target=_HostServices(self, put_failed, puts_done),
            prepare=self.prepare,
            backend=backend,
            host_health=self.deliveries_health,
        )

    def prepare(self, endpoint: Endpoint, deadline: float) -> None:
        """Make a new worker ready by ``deadline``: open its session, declare the ledger, host the objects again."""

        def left() -> float:
            seconds = deadline - time.monotonic()
            if seconds <= 0:
                raise CallTimeout("no time left to set the worker up")
            return seconds

        endpoint.request(Op.OPEN_SESSION, self._zenoh_source, timeout=left())
        for declaration in list(self.ledger.values()):
            declaration.declare(endpoint, left())
        for obj_id, spec in list(self.hosted.items()):
            endpoint.request(Op.HOST_OBJECT, (obj_id, *spec), timeout=left())

    def end_declarations(self, deadline: float) -> None:
        """The sidecar stopped: every declaration ends (iterators finish), nothing is replayed.
        Deliveries get until ``deadline`` together to finish: a stuck callback is left behind, not waited for."""
        ledger, self.ledger = self.ledger, {}
        self.hosted.clear()
        deliveries = [declaration.delivery for declaration in ledger.values() if declaration.delivery is not None]
        for declaration in ledger.values():
            declaration.closed = True
        for delivery in deliveries:
            delivery.close(wait=False)
        for delivery in deliveries:
            delivery.join(max(0.0, deadline - time.monotonic()))

    def deliveries_health(self) -> tuple[tuple[str, ...], int]:
        """Stuck callbacks and dropped items of this sidecar's deliveries, for health()."""
        deliveries = [declaration.delivery for declaration in list(self.ledger.values()) if declaration.delivery]
        stuck = tuple(why for delivery in deliveries if (why := delivery.stuck()))
        dropped = sum(delivery.backlog.dropped for delivery in deliveries if delivery.backlog is not None)
        return stuck, dropped

    # ----------------------------------------------------------------- running requests
    def call(self, method: str, args: tuple[Any, ...] = (), timeout: float | None = None) -> Any:
        self._check_puts()
        seconds = self.policy.call_timeout if timeout is None else timeout
        return self.supervisor.endpoint(seconds).request(method, args, timeout=seconds)

    def run(self, request: Request) -> Any:
        result = self.call(request.method, request.args, request.timeout)
        return result if request.convert is None else request.convert(result)

    async def acall(self, method: str, args: tuple[Any, ...] = (), timeout: float | None = None) -> Any:
        """``call`` without blocking the loop (waiting for a restarting worker happens in a thread)."""
        self._check_puts()
        seconds = self.policy.call_timeout if timeout is None else timeout
        try:
            endpoint = self.supervisor.endpoint(0.0)  # the common case: running, no wait
        except CallTimeout:
            endpoint = await asyncio.to_thread(self.supervisor.endpoint, seconds)
        return await endpoint.arequest(method, args, timeout=seconds)

    async def arun(self, request: Request) -> Any:
        result = await self.acall(request.method, request.args, request.timeout)
        return result if request.convert is None else request.convert(result)

    async def _undoable(
        self, request: Request, undo: Callable[[], Awaitable[Any]], at_once: Callable[[], None] = lambda: None
    ) -> Any:
        """Run ``request``; if cancelled meanwhile, ``at_once()``, let it end, ``undo`` it, re-raise.

        The request cannot be recalled once sent, and the worker may run it any moment: waiting for
        its answer (bounded by its timeout) is the only way to know there is something to undo.
        Cancelled again while undoing, the caller leaves at once and the undoing goes on without it.
        """
        task = asyncio.ensure_future(self.arun(request))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            at_once()
            cleanup = asyncio.ensure_future(_undo_after(task, undo))
            self._cleanups.add(cleanup)  # a strong reference until it is done
            cleanup.add_done_callback(self._cleanups.discard)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(cleanup)
            raise

    # ----------------------------------------------------------------- requests
    @staticmethod
    def info_request(timeout: float | None) -> Request:
        return Request(Op.INFO, (), timeout)

    @staticmethod
    def delete_request(
        key_expr: str, congestion_control: str | None, priority: str | None, express: bool | None, timeout: float | None
    ) -> Request:
        chosen = options(congestion_control=congestion_control, priority=priority, express=express)
        return Request(Op.DELETE, (check_key(key_expr, "delete"), chosen), timeout)

    def get_request(
        self,
        selector: str,
        payload: bytes | str | None,
        *,
        timeout: float,
        target: str | None,
        encoding: str | None,
        attachment: bytes | str | None,
    ) -> Request:
        if not isinstance(selector, str) or not selector:
            raise ValueError(f"get: selector must be a non-empty str, got {selector!r}")
        chosen = options(
            payload=None if payload is None else normalise_payload(payload, f"get {selector!r}"),
            timeout=timeout,
            target=target,
            encoding=encoding,
            attachment=attachment,
        )
        return Request(
            Op.GET,
            (selector, chosen or {}),
            timeout + self.policy.call_timeout,
            lambda replies: [Reply(*reply) for reply in replies],
        )

    def liveliness_get_request(self, key_expr: str, timeout: float) -> Request:
        key = check_key(key_expr, "liveliness_get")
        return Request(Op.LIVELINESS_GET, (key, timeout), timeout + self.policy.call_timeout)

    # ----------------------------------------------------------------- declarations
    def declare(self, declaration: _D) -> _D:
        self.ledger[declaration.decl_id] = declaration
        try:
            declaration.declare(self.supervisor.endpoint(self.policy.call_timeout))
        except BaseException:
            self._abandon(declaration)
            raise
        return declaration

    async def adeclare(self, declaration: _D) -> _D:
        """``declare`` awaited; cancelled, it leaves nothing declared and its delivery ended."""
        self.ledger[declaration.decl_id] = declaration

        def abandon() -> None:  # at once: no sample reaches a callback from here on
            self._abandon(declaration)

        try:
            await self._undoable(
                declaration.request(), lambda: self.acall(Op.UNDECLARE, (declaration.decl_id,)), abandon
            )
        except BaseException:
            self._abandon(declaration)
            raise
        return declaration

    def _abandon(self, declaration: Declared) -> None:
        self.ledger.pop(declaration.decl_id, None)
        if declaration.delivery is not None:
            declaration.delivery.close()

    def forget(self, decl_id: int) -> None:
        self.ledger.pop(decl_id, None)

    def undeclare(self, decl_id: int) -> None:
        """Forget and undeclare in the worker, best effort (a worker that is gone holds nothing)."""
        self.forget(decl_id)
        with contextlib.suppress(SidecarError):
            self.call(Op.UNDECLARE, (decl_id,))

    def send_answer(self, key_expr: str, query_id: int, query: Query, result: Any, raised: Exception | None) -> None:
        """Turn a handler's result (or exception) into zenoh replies, sent to the worker one-way."""
        replies: list[QueryReply] = []
        error: bytes | None = None
        try:
            if raised is not None:
                raise raised
            items = result if isinstance(result, list | tuple) else [] if result is None else [result]
            for item in items:
                replies.append(item if isinstance(item, QueryReply) else _reply_to(key_expr, query, item))
        except Exception as exc:
            self._log.warning("queryable handler raised", key_expr=key_expr, error=repr(exc))
            replies, error = [], f"{type(exc).__name__}: {exc}".encode()
        with contextlib.suppress(SidecarError):
            self.supervisor.endpoint(self.policy.call_timeout).notify(Op.REPLY, query_id, replies, error)

    # ----------------------------------------------------------------- hosted objects
    def host(self, classname: str | dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        obj_id, spec = hosting_spec(classname, args, kwargs)
        shape = self.call(Op.HOST_OBJECT, (obj_id, *spec))
        self.hosted[obj_id] = spec
        return obj_id, shape

    async def ahost(self, classname: str | dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        obj_id, spec = hosting_spec(classname, args, kwargs)
        request = Request(Op.HOST_OBJECT, (obj_id, *spec), None)
        shape = await self._undoable(request, lambda: self.acall(Op.DROP_OBJECT, (obj_id,)))
        self.hosted[obj_id] = spec
        return obj_id, shape

    def expose(self, obj: object) -> ObjectRef:
        ref = ObjectRef(next(ids), type(obj).__name__)
        self.exported[ref.ref_id] = obj
        return ref

    # ----------------------------------------------------------------- logs
    def emit_worker_logs(self, records: list[dict[str, Any]]) -> None:
        """Re-emit worker records through ``logging`` here, each with the pid and incarnation that
        wrote it; records of other libraries in the worker go out under ``boss_sidecar.worker``."""
        for record in records:
            level = str(record.pop("level", "info")).lower()
            event = str(record.pop("event", ""))
            name = str(record.get("logger", ""))
            if name.startswith("boss_sidecar"):
                del record["logger"]
            else:
                name = "boss_sidecar.worker"
            number = logging.getLevelName({"warn": "WARNING", "exception": "ERROR"}.get(level, level.upper()))
            fields = {"sidecar": self.name, **record}
            get_logger(name).log(number if isinstance(number, int) else logging.INFO, event, **fields)


async def _undo_after(task: asyncio.Future[Any], undo: Callable[[], Awaitable[Any]]) -> None:
    """Once ``task`` succeeded, ``undo`` it; a request that failed left nothing to undo."""
    try:
        await task
    except Exception:
        return
    with contextlib.suppress(Exception):
        await undo()


def _reply_to(key_expr: str, query: Query, payload: Any) -> QueryReply:
    for key in (query.key_expr, key_expr):
        if "*" not in key and "$" not in key:
            return QueryReply(key, normalise_payload(payload, f"reply to {query.selector!r}"))
    raise ValueError(f"query {query.selector!r} has a wildcard key: return QueryReply(key_expr, payload)")


class _HostServices(HostApi):
    """What the worker may call in the host: deliveries, log records and reverse calls."""

    def __init__(
        self, core: SidecarCore, put_failed: Callable[[list[str]], None], puts_done: Callable[[int], None]
    ) -> None:
        self._core = core
        self._put_failed = put_failed
        self._puts_done = puts_done

    def put_failed(self, errors: list[str]) -> None:
        self._put_failed(errors)

    def puts_done(self, seqs: list[int]) -> None:
        """The worker handed these batches (and all before them) to zenoh."""
        self._puts_done(max(seqs))

    def samples(self, runs: list[SampleRun]) -> None:
        """Consecutive runs of one declaration go to its delivery as one hand-off: the worker sends
        a run per batch it took from zenoh, often several per message, and each hand-off wakes the
        delivery's thread."""
        ledger = self._core.ledger
        for decl_id, group in itertools.groupby(runs, key=operator.itemgetter(0)):
            declaration = ledger.get(decl_id)
            if declaration is not None and declaration.delivery is not None:
                samples = samples_of(next(group))
                for run in group:
                    samples += samples_of(run)
                declaration.delivery.put_many(samples)

    def queries(self, items: list[tuple[Any, ...]]) -> None:
        ledger = self._core.ledger
        for decl_id, query_id, *fields in items:
            declaration = ledger.get(decl_id)
            if declaration is not None and declaration.delivery is not None:
                declaration.delivery.put((query_id, Query(*fields)))

    def logs(self, records: list[dict[str, Any]]) -> None:
        self._core.emit_worker_logs(records)

    def call_exported(self, ref_id: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        target = self._core.exported.get(ref_id)
        if target is None:
            raise LookupError(f"no exported host object #{ref_id}")
        if not method.isidentifier() or method.startswith("_"):
            raise AttributeError(f"{method!r} is not exposed (only public names of exported objects are)")
        return getattr(target, method)(*args, **kwargs)


def hosting_spec(
    classname: str | dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[int, HostingSpec]:
    """A fresh object id and what the worker needs to build (and rebuild) the object."""
    default_name = None
    if isinstance(classname, dict):
        default_name = classname.get("_id")
        classname, kwargs = _from_boss_document(classname, kwargs)
    if not isinstance(classname, str) or not classname:
        raise ConfigError(f"classname must be a non-empty str, got {classname!r}")
    return next(ids), (classname, args, kwargs, default_name)


def _from_boss_document(document: dict[str, Any], kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    unknown = set(document) - {"_id", "classname", "arguments"}
    if "classname" not in document:
        raise ConfigError("hosted object document has no 'classname'")
    if unknown:
        raise ConfigError(f"hosted object document has unknown keys: {', '.join(sorted(unknown))}")
    arguments = dict(document.get("arguments") or {})
    arguments.update(kwargs)
    return document["classname"], arguments
