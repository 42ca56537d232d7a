"""What the worker serves to its host: one zenoh session, declarations, hosted objects.

Every public method here is callable by the host through the Endpoint. zenoh objects never
cross the channel (the host must not import zenoh): samples, replies and queries travel as plain
tuples, zenoh errors as ``ZenohError`` carrying zenoh's text (``convert``). Loading, wiring and
releasing a hosted object: ``hosting``.
"""

from __future__ import annotations

import functools
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
from boss_sidecar.samples import ObjectRef, QueryReply
from boss_sidecar.worker.convert import convert_samples, qos, query_fields, take_runs, zenoh_call
from boss_sidecar.worker.forward import Forwarder
from boss_sidecar.worker.heros_session import share_session_with_heros
from boss_sidecar.worker.hosting import RemoteObject, load_class, takes_name, teardown
from boss_sidecar.worker_api import EventKind, Op, WorkerApi

_log = get_logger("boss_sidecar.worker")

SUBSCRIBER_CHANNEL = 1024
"""Samples a subscriber's channel holds; should its drain thread fall that far behind, zenoh waits."""


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
            converted = [(decl_id, query, query_fields(query)) for decl_id, query in items]
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
        self._session = zenoh_call("open zenoh session", lambda: zenoh.open(config))
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
                    kwargs = converted[id(options)] = qos(options)
                session.put(key, payload, **kwargs)
            except Exception as exc:
                self._push(EventKind.PUT_FAILED, f"put {key!r}: {exc}")
        if seq is not None:
            self._push(EventKind.PUTS_DONE, seq)

    def delete(self, key_expr: str, options: dict[str, Any] | None = None) -> None:
        session = self._require_session()
        zenoh_call(f"delete {key_expr!r}", lambda: session.delete(key_expr, **qos(options)))

    def get(self, selector: str, options: dict[str, Any]) -> list[tuple[bool, str | None, bytes, str]]:
        """Query and collect every reply (errors included) until zenoh's timeout ends the query."""
        session = self._require_session()
        replies = zenoh_call(f"get {selector!r}", lambda: session.get(selector, **qos(options)))
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
        replies = zenoh_call(
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
                push_many(EventKind.SAMPLES, take_runs(decl_id, channel))
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
        entity = zenoh_call(what, declare)
        with self._lock:
            previous = self._declarations.pop(decl_id, None)
            self._declarations[decl_id] = entity
        if previous is not None:
            zenoh_call(f"undeclare {decl_id}", previous.undeclare)
        return entity

    def undeclare(self, decl_id: int) -> bool:
        """Undeclare one declaration (never from a zenoh callback: that deadlocks since 1.8)."""
        with self._lock:
            entity = self._declarations.pop(decl_id, None)
        if entity is None:
            return False
        zenoh_call(f"undeclare {decl_id}", entity.undeclare)
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
        if default_name is not None and "name" not in kwargs and takes_name(cls):
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
        teardown(instance)
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
            teardown(instance)
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
