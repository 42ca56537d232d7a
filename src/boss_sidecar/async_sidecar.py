"""``AsyncSidecar``: the Sidecar for asyncio code, as thin awaitable wrappers over one core.

Remote operations are the same request builders the sync proxy runs, awaited on the endpoint's
futures; lifecycle steps that block (spawn, stop escalation) run in a worker thread. Callbacks
and handlers may be coroutine functions; they run on the loop, in order per declaration.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from boss_sidecar.delivery import AsyncDelivery
from boss_sidecar.errors import CallTimeout
from boss_sidecar.samples import ObjectRef, Query, Reply, Sample
from boss_sidecar.sidecar import (
    Declaration,
    LivelinessToken,
    Queryable,
    Sidecar,
    Subscription,
    SupervisedFacts,
    _HostedProxy,
    _hosting_spec,
    _Request,
)
from boss_sidecar.worker_api import Op

_D = TypeVar("_D", bound=Declaration)


class AsyncSubscription(Subscription):
    """A subscription to iterate with ``async for sample in sub``."""

    def __aiter__(self) -> Any:
        if not isinstance(self.delivery, AsyncDelivery):
            raise TypeError("async-iterate only subscriptions made without a callback")
        return self.delivery.__aiter__()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


class AsyncHostedObject(_HostedProxy):
    """Proxy of an object in the worker: ``await obj.method(...)``, ``await obj.attribute``,
    ``await obj.set_attribute(name, value)``."""

    def _method(self, name: str) -> Callable[..., Any]:
        async def method(*args: Any, **kwargs: Any) -> Any:
            return await self._sidecar._call(Op.CALL_OBJECT, (self._obj_id, name, args, kwargs))

        return method

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError(f"use 'await proxy.set_attribute({name!r}, value)' on an async hosted object")

    async def set_attribute(self, name: str, value: Any) -> None:
        await self._sidecar._call(Op.SET_OBJECT_ATTRIBUTE, (self._obj_id, name, value))

    async def close(self) -> None:
        self._sidecar._sync._hosted.pop(self._obj_id, None)
        await self._sidecar._call(Op.DROP_OBJECT, (self._obj_id,))

    def __repr__(self) -> str:
        return f"<hosted {self._class} #{self._obj_id} in sidecar {self._sidecar.name} (async)>"


class AsyncSidecar(SupervisedFacts):
    """The awaitable Sidecar: same constructor, same operations, ``await`` them."""

    def __init__(
        self, name: str = "sidecar", zenoh: dict[str, Any] | str | os.PathLike[str] | None = None, **policy: Any
    ):
        self._sync = Sidecar(name, zenoh, **policy)
        self._supervisor = self._sync._supervisor
        self.name = name
        self.policy = self._sync.policy

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> AsyncSidecar:
        await asyncio.to_thread(self._sync.start)
        return self

    async def stop(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self._sync.stop, timeout)

    async def restart(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self._sync.restart, timeout)

    async def _rpc_stop(self) -> None:
        await self.stop()

    async def __aenter__(self) -> AsyncSidecar:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ----------------------------------------------------------------- the core
    async def _call(self, method: str, args: tuple[Any, ...] = (), timeout: float | None = None) -> Any:
        sync = self._sync
        sync._raise_put_errors()
        seconds = sync.policy.call_timeout if timeout is None else timeout
        supervisor = sync._supervisor
        try:
            endpoint = supervisor.endpoint(0.0)  # the common case: running, no wait
        except CallTimeout:
            endpoint = await asyncio.to_thread(supervisor.endpoint, seconds)
        return await endpoint.arequest(method, args, timeout=seconds)

    async def _run(self, request: _Request) -> Any:
        result = await self._call(request.method, request.args, request.timeout)
        return result if request.convert is None else request.convert(result)

    # ----------------------------------------------------------------- zenoh
    async def info(self, timeout: float | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._run(_Request(Op.INFO, (), timeout))
        return result

    async def put(self, key_expr: str, payload: bytes | str, **options: Any) -> None:
        """Fire-and-forget like Sidecar.put (it only queues, so it does not block the loop)."""
        self._sync.put(key_expr, payload, **options)

    async def flush(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self._sync.flush, timeout)

    async def delete(self, key_expr: str, *, timeout: float | None = None, **options: Any) -> None:
        await self.flush(timeout)
        await self._run(
            self._sync._delete_request(
                key_expr, options.get("congestion_control"), options.get("priority"), options.get("express"), timeout
            )
        )

    async def get(
        self,
        selector: str,
        payload: bytes | str | None = None,
        *,
        timeout: float = 10.0,
        target: str | None = None,
        encoding: str | None = None,
        attachment: bytes | str | None = None,
    ) -> list[Reply]:
        request = self._sync._get_request(
            selector, payload, timeout=timeout, target=target, encoding=encoding, attachment=attachment
        )
        replies: list[Reply] = await self._run(request)
        return replies

    async def liveliness_get(self, key_expr: str, timeout: float = 10.0) -> list[str]:
        result: list[str] = await self._run(self._sync._liveliness_get_request(key_expr, timeout))
        return result

    async def subscribe(self, key_expr: str, callback: Callable[[Sample], Any] | None = None) -> AsyncSubscription:
        """``callback`` (plain or coroutine function) runs on this loop; without one, ``async for``."""
        return await self._declare(AsyncSubscription, "subscriber", key_expr, (), callback)

    async def liveliness_subscribe(
        self, key_expr: str, callback: Callable[[Sample], Any] | None = None, *, history: bool = False
    ) -> AsyncSubscription:
        return await self._declare(AsyncSubscription, "liveliness_subscriber", key_expr, (history,), callback)

    async def queryable(self, key_expr: str, handler: Callable[[Query], Any], *, complete: bool = False) -> Queryable:
        """``handler(query)`` (plain or coroutine function) runs on this loop; see Sidecar.queryable."""
        holder: list[Queryable] = []

        async def answer(item: tuple[int, Query]) -> None:
            query_id, query = item
            try:
                result = handler(query)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                self._sync._send_answer(holder[0], query_id, query, None, exc)
            else:
                self._sync._send_answer(holder[0], query_id, query, result, None)

        queryable = await self._declare(Queryable, "queryable", key_expr, (complete,), answer)
        holder.append(queryable)
        return queryable

    async def liveliness_token(self, key_expr: str) -> LivelinessToken:
        return await asyncio.to_thread(self._sync.liveliness_token, key_expr)

    async def _declare(
        self,
        cls: type[_D],
        kind: str,
        key_expr: str,
        arguments: tuple[Any, ...],
        callback: Callable[[Any], Any] | None,
    ) -> _D:
        delivery: AsyncDelivery[Any] = AsyncDelivery(asyncio.get_running_loop(), callback, f"{self.name}:{key_expr}")
        declaration: _D = await asyncio.to_thread(self._sync._declare, cls, kind, key_expr, arguments, delivery)
        return declaration

    # ----------------------------------------------------------------- hosted objects
    async def host(self, classname: str | dict[str, Any], *args: Any, **kwargs: Any) -> AsyncHostedObject:
        """See Sidecar.host; the proxy's methods and attribute reads are awaitable."""
        obj_id, spec = _hosting_spec(classname, args, kwargs)
        shape = await self._call(Op.HOST_OBJECT, (obj_id, *spec))
        self._sync._hosted[obj_id] = spec
        return AsyncHostedObject(self, obj_id, shape)

    def expose(self, obj: object) -> ObjectRef:
        return self._sync.expose(obj)
