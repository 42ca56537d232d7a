"""What the worker serves to its host: one zenoh session, declarations, hosted objects.

Every public method here is callable by the host through the Endpoint. zenoh objects never
cross the channel (the host must not import zenoh): samples, replies and queries travel as plain
tuples, zenoh errors as ``ZenohError`` carrying zenoh's text.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import zenoh

from boss_sidecar.errors import ConfigError, SidecarUnavailable, ZenohError
from boss_sidecar.logs import get_logger
from boss_sidecar.protocol import Call
from boss_sidecar.rpc import Endpoint
from boss_sidecar.samples import ObjectRef, QueryReply, SampleRun, column
from boss_sidecar.worker.forward import Forwarder, spans
from boss_sidecar.worker.heros_session import share_session_with_heros
from boss_sidecar.worker_api import EventKind, HostOp, Op, WorkerApi

_log = get_logger("boss_sidecar.worker")

SUBSCRIBER_CHANNEL = 1024
"""Samples a subscriber's channel holds; should its drain thread fall that far behind, zenoh waits."""
MAX_RUN = 512
"""Samples a drain thread takes from its channel at once."""
_CONGESTION = {"drop": "DROP", "block": "BLOCK", "block_first": "BLOCK_FIRST"}
_TARGETS = {"best_matching": "BEST_MATCHING", "all": "ALL", "all_complete": "ALL_COMPLETE"}
_PRIORITIES = {
    name.lower(): name
    for name in ("REAL_TIME", "INTERACTIVE_HIGH", "INTERACTIVE_LOW", "DATA_HIGH", "DATA", "DATA_LOW", "BACKGROUND")
}


def _zenoh_enum(enum: Any, table: dict[str, str], value: object, what: str) -> Any:
    # zenoh's enums are PyO3 classes without __members__: the table names the choices.
    name = table.get(value.lower()) if isinstance(value, str) else None
    if name is None or not hasattr(enum, name):
        raise ValueError(f"{what} must be one of {sorted(table)}, got {value!r}")
    return getattr(enum, name)


def _qos(options: dict[str, Any] | None) -> dict[str, Any]:
    """zenoh keyword arguments from the plain options the host sends."""
    if not options:
        return {}
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key == "congestion_control":
            kwargs[key] = _zenoh_enum(zenoh.CongestionControl, _CONGESTION, value, key)
        elif key == "priority":
            kwargs[key] = _zenoh_enum(zenoh.Priority, _PRIORITIES, value, key)
        elif key == "target":
            kwargs[key] = _zenoh_enum(zenoh.QueryTarget, _TARGETS, value, key)
        elif key in ("encoding", "express", "attachment", "payload", "timeout"):
            kwargs[key] = value
        else:
            raise ValueError(f"unknown option {key!r}")
    return kwargs


def _zenoh_call(what: str, function: Callable[[], Any]) -> Any:
    """Run a zenoh operation, turning zenoh's errors into ones the host can unpickle."""
    try:
        return function()
    except zenoh.ZError as exc:
        raise ZenohError(f"{what}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ZenohError(f"{what}: {exc}") from None


_PUT = zenoh.SampleKind.PUT


def sample_runs(decl_id: int, samples: list[Any]) -> list[SampleRun]:
    """``samples`` (of one declaration) as runs for the host, each of at most MAX_MESSAGE_BYTES of payload
    (or one sample), so the forwarder can keep messages small."""
    payloads = [sample.payload.to_bytes() for sample in samples]
    runs: list[SampleRun] = []
    for start, end in spans(list(map(len, payloads))):
        part = samples[start:end]
        timestamps = [sample.timestamp for sample in part]
        attachments = [sample.attachment for sample in part]
        runs.append(
            (
                decl_id,
                column([str(sample.key_expr) for sample in part]),
                payloads[start:end],
                column(["put" if sample.kind == _PUT else "delete" for sample in part]),
                column([str(sample.encoding) for sample in part]),
                column([None if stamp is None else str(stamp) for stamp in timestamps]),
                column([None if extra is None else extra.to_bytes() for extra in attachments]),
            )
        )
    return runs


def convert_samples(decl_id: int, samples: list[Any]) -> list[SampleRun]:
    """``sample_runs``; should that fail, each sample alone, one that cannot be converted logged and left out."""
    try:
        return sample_runs(decl_id, samples)
    except Exception:
        runs: list[SampleRun] = []
        for sample in samples:
            try:
                runs += sample_runs(decl_id, [sample])
            except Exception:
                _log.exception("could not convert sample for the host", decl_id=decl_id)
        return runs


def _take_runs(decl_id: int, channel: Any) -> list[SampleRun]:
    """The samples waiting in a subscriber's channel (waiting for one if none), converted at once.

    Converted here rather than on the forwarder's thread, and the zenoh samples let go when this
    returns: a sample holds zenoh's buffer, which may be the publisher's shared memory. A publisher on
    this machine puts large payloads in a pool of its own (16 MiB by default) when it can, and sends
    them through the socket (at several times the CPU cost, on both sides) when the pool is taken up.
    Samples waiting for the forwarder used to hold the whole pool: measured with 64 KiB samples, the
    peer's CPU per sample went from about 35 to 20 us."""
    samples = [channel.recv()]
    while len(samples) < MAX_RUN and (sample := channel.try_recv()) is not None:
        samples.append(sample)
    return convert_samples(decl_id, samples)


def _query_fields(query: Any) -> tuple[str, str, str, bytes | None, str | None, bytes | None]:
    payload, encoding, attachment = query.payload, query.encoding, query.attachment
    return (
        str(query.selector),
        str(query.key_expr),
        str(query.parameters),
        None if payload is None else payload.to_bytes(),
        None if encoding is None else str(encoding),
        None if attachment is None else attachment.to_bytes(),
    )


def load_class(classname: str) -> type:
    """Import ``pkg.mod:Class`` or ``pkg.mod.Class``; errors name what was missing."""
    if ":" in classname:
        module_name, _, qualname = classname.partition(":")
    else:
        module_name, _, qualname = classname.rpartition(".")
    if not module_name or not qualname:
        raise ConfigError(f"classname {classname!r} must look like 'package.module:Class' or 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot host {classname!r}: module {module_name!r} not importable: {exc}") from None
    obj: Any = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"cannot host {classname!r}: {module_name!r} has no {qualname!r}") from None
    if not isinstance(obj, type):
        raise ConfigError(f"cannot host {classname!r}: it is a {type(obj).__name__}, not a class")
    return obj


class RemoteObject:
    """A host object, seen from the worker: attribute access becomes calls back to the host."""

    def __init__(self, endpoint: Endpoint, ref: ObjectRef) -> None:
        self._endpoint = endpoint
        self._ref = ref

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._endpoint.request(HostOp.CALL_EXPORTED, (self._ref.ref_id, name, args, kwargs))

        return call

    def __repr__(self) -> str:
        return f"<RemoteObject {self._ref.type_name} #{self._ref.ref_id} in the host>"


class WorkerService(WorkerApi):
    """The object the worker's Endpoint serves to the host."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._session: Any = None
        self._endpoint: Endpoint | None = None
        self._forwarder: Forwarder | None = None
        self._declarations: dict[int, Any] = {}
        self._objects: dict[int, Any] = {}
        self._queries: dict[int, Any] = {}
        self._query_ids = iter(range(1, sys.maxsize))
        self._lock = threading.Lock()
        self._closed = False

    # ----------------------------------------------------------------- plumbing (not exposed)
    def _attach(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._forwarder = Forwarder(endpoint.notify, self._convert, self._weigh)

    def _push(self, kind: str, item: Any) -> None:
        assert self._forwarder is not None
        self._forwarder.push(kind, item)

    def _convert(self, kind: str, items: list[Any]) -> list[Any]:
        """What travels to the host for a run of forwarded items of one kind (the forwarder's thread)."""
        if kind in (EventKind.SAMPLES, EventKind.LOGS, EventKind.PUT_FAILED, EventKind.PUTS_DONE):  # runs already
            return items
        if kind == EventKind.QUERIES:
            converted = [(decl_id, query, _query_fields(query)) for decl_id, query in items]
            answerable = []
            for decl_id, query, fields in converted:  # kept only once all converted: none is orphaned
                query_id = next(self._query_ids)
                self._queries[query_id] = query
                answerable.append((decl_id, query_id, *fields))
            return answerable
        raise ValueError(f"unknown forward kind {kind!r}")

    @staticmethod
    def _weigh(kind: str, item: Any) -> int:
        """Payload bytes of a converted item, so the forwarder keeps messages small."""
        if kind == EventKind.SAMPLES:
            return sum(map(len, item[2]))
        if kind == EventKind.QUERIES and item[5] is not None:
            return len(item[5])
        return 0

    def _require_session(self) -> Any:
        if self._closed:
            raise SidecarUnavailable(f"{self.name}: worker stopping (zenoh session closed)")
        if self._session is None:
            raise ZenohError("no zenoh session is open")
        return self._session

    def _resolve_refs(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        assert self._endpoint is not None
        return tuple(RemoteObject(self._endpoint, v) if isinstance(v, ObjectRef) else v for v in values)

    # ----------------------------------------------------------------- session
    def open_session(self, source: str, value: str | None) -> dict[str, Any]:
        """Open the zenoh session from ``source``: "json" text, "file" path, "env", or "default"."""
        try:
            if source == "json":
                assert value is not None
                config = zenoh.Config.from_json5(value)
            elif source == "file":
                assert value is not None
                config = zenoh.Config.from_file(value)
            elif source == "env":
                config = zenoh.Config.from_json5(os.environ["HEROS_ZENOH_CONFIG"])
            else:
                config = zenoh.Config()
        except (zenoh.ZError, ValueError, OSError) as exc:
            origin = {"file": f"file {value}", "env": "HEROS_ZENOH_CONFIG"}.get(source, "configuration")
            raise ConfigError(f"invalid zenoh {origin}: {exc}") from None
        self._session = _zenoh_call("open zenoh session", lambda: zenoh.open(config))
        _log.info("zenoh session open", zid=str(self._session.zid()))
        return self.info()

    def info(self) -> dict[str, Any]:
        """zid of this session and of the peers and routers it is connected to."""
        session = self._require_session()
        info = session.info
        return {
            "zid": str(info.zid()),
            "peers": [str(z) for z in info.peers_zid()],
            "routers": [str(z) for z in info.routers_zid()],
        }

    def sync(self, timeout: float = 5.0) -> None:
        """Return once everything sent to the host before this call has left (orders events)."""
        assert self._forwarder is not None
        self._forwarder.drain(timeout)

    # ----------------------------------------------------------------- publishing and querying
    def put_batch(self, items: list[tuple[str, bytes, dict[str, Any] | None]], seq: int | None = None) -> None:
        """Hand coalesced puts to zenoh, in order (an event); then confirm batch ``seq`` to the host with a
        ``puts_done`` event (a batch whose worker ended unconfirmed is counted there); failures go back as events."""
        session = self._require_session()
        converted: dict[int, dict[str, Any]] = {}  # the host shares one options dict among like puts
        for key, payload, options in items:
            try:
                if options is None:
                    session.put(key, payload)
                    continue
                kwargs = converted.get(id(options))
                if kwargs is None:
                    kwargs = converted[id(options)] = _qos(options)
                session.put(key, payload, **kwargs)
            except Exception as exc:
                self._push(EventKind.PUT_FAILED, f"put {key!r}: {exc}")
        if seq is not None:
            self._push(EventKind.PUTS_DONE, seq)

    def delete(self, key_expr: str, options: dict[str, Any] | None = None) -> None:
        session = self._require_session()
        _zenoh_call(f"delete {key_expr!r}", lambda: session.delete(key_expr, **_qos(options)))

    def get(self, selector: str, options: dict[str, Any]) -> list[tuple[bool, str | None, bytes, str]]:
        """Query and collect every reply (errors included) until zenoh's timeout ends the query."""
        session = self._require_session()
        replies = _zenoh_call(f"get {selector!r}", lambda: session.get(selector, **_qos(options)))
        collected: list[tuple[bool, str | None, bytes, str]] = []
        for reply in replies:
            ok = reply.ok
            if ok is not None:
                collected.append((True, str(ok.key_expr), ok.payload.to_bytes(), str(ok.encoding)))
            else:
                err = reply.err
                collected.append((False, None, err.payload.to_bytes(), str(err.encoding)))
        return collected

    def liveliness_get(self, key_expr: str, timeout: float) -> list[str]:
        """Key expressions of the liveliness tokens alive now."""
        session = self._require_session()
        replies = _zenoh_call(
            f"liveliness get {key_expr!r}", lambda: session.liveliness().get(key_expr, timeout=timeout)
        )
        return [str(reply.ok.key_expr) for reply in replies if reply.ok is not None]

    # ----------------------------------------------------------------- declarations
    def declare_subscriber(self, decl_id: int, key_expr: str) -> None:
        """A subscriber with a channel, drained by a thread of its own, rather than a callback:
        zenoh's thread then never waits for the GIL per sample, and samples travel in runs."""
        session = self._require_session()
        channel: Any = zenoh.handlers.FifoChannel(SUBSCRIBER_CHANNEL)
        subscriber = self._declare(
            decl_id, f"subscribe {key_expr!r}", lambda: session.declare_subscriber(key_expr, channel)
        )
        # recv on the handler, not on the subscriber: undeclare needs the subscriber while we wait.
        drain = threading.Thread(
            target=self._drain, args=(decl_id, subscriber.handler), name=f"subscriber-{decl_id}", daemon=True
        )
        drain.start()

    def _drain(self, decl_id: int, channel: Any) -> None:
        """Hand a subscriber's samples to the forwarder, a run at a time, until it is undeclared."""
        assert self._forwarder is not None
        push_many = self._forwarder.push_many
        try:
            while True:
                push_many(EventKind.SAMPLES, _take_runs(decl_id, channel))
        except zenoh.ZError:  # undeclared, or the session closed: the channel is closed and empty
            return

    def declare_queryable(self, decl_id: int, key_expr: str, complete: bool = False) -> None:
        session = self._require_session()

        def on_query(query: Any) -> None:
            self._push(EventKind.QUERIES, (decl_id, query))

        self._declare(
            decl_id,
            f"queryable {key_expr!r}",
            lambda: session.declare_queryable(key_expr, on_query, complete=complete),
        )

    def declare_token(self, decl_id: int, key_expr: str) -> None:
        session = self._require_session()
        self._declare(decl_id, f"liveliness token {key_expr!r}", lambda: session.liveliness().declare_token(key_expr))

    def declare_liveliness_subscriber(self, decl_id: int, key_expr: str, history: bool = False) -> None:
        session = self._require_session()

        def on_sample(sample: Any) -> None:
            assert self._forwarder is not None
            self._forwarder.push_many(EventKind.SAMPLES, convert_samples(decl_id, [sample]))

        self._declare(
            decl_id,
            f"liveliness subscriber {key_expr!r}",
            lambda: session.liveliness().declare_subscriber(key_expr, on_sample, history=history),
        )

    def _declare(self, decl_id: int, what: str, declare: Callable[[], Any]) -> Any:
        entity = _zenoh_call(what, declare)
        with self._lock:
            previous = self._declarations.pop(decl_id, None)
            self._declarations[decl_id] = entity
        if previous is not None:
            _zenoh_call(f"undeclare {decl_id}", previous.undeclare)
        return entity

    def undeclare(self, decl_id: int) -> bool:
        """Undeclare one declaration (never from a zenoh callback: that deadlocks since 1.8)."""
        with self._lock:
            entity = self._declarations.pop(decl_id, None)
        if entity is None:
            return False
        _zenoh_call(f"undeclare {decl_id}", entity.undeclare)
        return True

    def reply(self, query_id: int, replies: list[QueryReply], error: bytes | None = None) -> None:
        """Answer a forwarded query (an event from the host), then finalise it."""
        query = self._queries.pop(query_id, None)
        if query is None:
            _log.warning("reply for an unknown or expired query", query_id=query_id)
            return
        try:
            if error is not None:
                query.reply_err(error)
            for item in replies:
                query.reply(item.key_expr, item.payload, encoding=item.encoding)
        except Exception as exc:
            _log.error("query reply failed", query_id=query_id, error=str(exc))
        finally:
            query.drop()

    # ----------------------------------------------------------------- hosted objects
    def host_object(
        self,
        obj_id: int,
        classname: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        default_name: str | None = None,
    ) -> dict[str, Any]:
        """Instantiate ``classname`` here and keep it under ``obj_id``; returns its public shape.

        ``default_name`` (BOSS's ``_id``) is passed as ``name`` when the class takes one.
        """
        cls = load_class(classname)
        if default_name is not None and "name" not in kwargs and _takes_name(cls):
            kwargs = {**kwargs, "name": default_name}
        self._share_session_with_heros()
        keywords = dict(zip(kwargs, self._resolve_refs(tuple(kwargs.values())), strict=True))
        instance = cls(*self._resolve_refs(args), **keywords)
        with self._lock:
            self._objects[obj_id] = instance
        methods = sorted(
            name for name in dir(type(instance)) if not name.startswith("_") and callable(getattr(instance, name, None))
        )
        return {"class": f"{cls.__module__}.{cls.__qualname__}", "methods": methods}

    def _hosted(self, obj_id: int, name: str) -> Any:
        if not name.isidentifier() or name.startswith("_"):
            raise AttributeError(f"{name!r} is not exposed (only public names of hosted objects are)")
        try:
            return self._objects[obj_id]
        except KeyError:
            if self._closed:  # a call that came in as this worker was stopped: a sidecar error, not the caller's
                raise SidecarUnavailable(f"{self.name}: worker stopping (hosted objects released)") from None
            raise LookupError(f"no hosted object #{obj_id}") from None

    def _describe_call(self, call: Call) -> str | None:
        """How overdue reports name a call to a hosted object: its class and method, not ``call_object``."""
        if call.method != Op.CALL_OBJECT or len(call.args) < 2:
            return None
        obj_id, method = call.args[0], call.args[1]
        instance = self._objects.get(obj_id) if isinstance(obj_id, int) else None
        owner = "a hosted object that is gone" if instance is None else type(instance).__qualname__
        return f"call {method!r} of {owner} (hosted #{obj_id})"

    def call_object(self, obj_id: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._bound(obj_id, method, args, kwargs)()

    def _dispatch(self, call: Call) -> Callable[[], Any] | None:
        """The endpoint's dispatch: a call to a hosted object goes straight to the object's method, looked
        up once here, rather than to ``call_object`` first; None for the other operations."""
        if call.method != Op.CALL_OBJECT:
            return None
        return self._bound(*call.args)

    def _bound(self, obj_id: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], Any]:
        function = getattr(self._hosted(obj_id, method), method)
        if not callable(function):
            raise TypeError(f"{method!r} is not callable")
        return functools.partial(function, *self._resolve_refs(args), **kwargs)

    def get_object_attribute(self, obj_id: int, name: str) -> Any:
        return getattr(self._hosted(obj_id, name), name)

    def set_object_attribute(self, obj_id: int, name: str, value: Any) -> None:
        instance = self._hosted(obj_id, name)
        if inspect.isroutine(getattr(instance, name, None)):
            raise AttributeError(f"{name!r} is a method of hosted object #{obj_id}; it cannot be replaced")
        setattr(instance, name, value)

    def drop_object(self, obj_id: int) -> bool:
        with self._lock:
            instance = self._objects.pop(obj_id, None)
        if instance is None:
            return False
        _teardown(instance)
        return True

    def _share_session_with_heros(self) -> None:
        """Let HEROS objects hosted here use our session, for every realm, instead of opening others."""
        share_session_with_heros(self._session)

    # ----------------------------------------------------------------- shutdown
    def stop(self, reason: str) -> None:
        """Undeclare everything, close the session; the host's stop request runs this."""
        _log.info("stopping", reason=reason)
        self.shutdown()

    def shutdown(self) -> None:
        """Release objects, declarations and the session; each step logged, none fatal."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            objects, self._objects = self._objects, {}
            declarations, self._declarations = self._declarations, {}
        for instance in objects.values():
            _teardown(instance)
        for query in self._queries.values():
            query.drop()
        self._queries.clear()
        for entity in declarations.values():
            try:
                entity.undeclare()
            except Exception as exc:
                _log.warning("undeclare failed", error=str(exc))
        if self._session is not None:
            try:
                self._session.close()
            except Exception as exc:
                _log.warning("session close failed", error=str(exc))
        if self._forwarder is not None:
            self._forwarder.close()


def _takes_name(cls: type) -> bool:
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return "name" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _teardown(instance: Any) -> None:
    """Release a hosted object the way BOSS does: its ``_teardown``, then a HERO's ``_destroy_hero``."""
    for hook in ("_teardown", "_destroy_hero"):
        method = getattr(instance, hook, None)
        if callable(method):
            try:
                method()
            except Exception as exc:
                _log.warning("hosted object teardown failed", hook=hook, error=str(exc))
