"""``AsyncSidecar``: the Sidecar for asyncio code, as thin awaitable wrappers over one core.

Remote operations are the requests of the core both proxies share (``_core.SidecarCore``), awaited
on the endpoint's futures; lifecycle steps that block (spawn, stop escalation) and a put that must
wait for room in the put buffer run in a worker thread. A cancelled operation undoes itself. Callbacks
and handlers may be coroutine functions; they run on the loop, in order per declaration.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from boss_sidecar._core import SidecarCore, check_key, ids
from boss_sidecar.delivery import AsyncDelivery
from boss_sidecar.hosted import AsyncHostedObject
from boss_sidecar.samples import ObjectRef, Query, Reply, Sample
from boss_sidecar.sidecar import Declaration, LivelinessToken, Queryable, Sidecar, Subscription, SupervisedFacts

_D = TypeVar("_D", bound=Declaration)


class AsyncSubscription(Subscription):
    """A subscription to iterate with ``async for sample in sub``."""

    def __aiter__(self) -> Any:
        if not isinstance(self.delivery, AsyncDelivery):
            raise TypeError("async-iterate only subscriptions made without a callback")
        return self.delivery.__aiter__()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


class AsyncSidecar(SupervisedFacts):
    """The awaitable Sidecar: same constructor, same operations and checks, ``await`` them.

    Remote operations run the requests of the core it shares with ``Sidecar``; puts go through
    the same buffer (a full buffer is awaited, never waited for on the loop).
    """

    def __init__(
        self, name: str = "sidecar", zenoh: dict[str, Any] | str | os.PathLike[str] | None = None, **policy: Any
    ):
        self._sync = Sidecar(name, zenoh, **policy)  # lifecycle and the put buffer, through its public API
        self._core: SidecarCore = self._sync.core
        self._supervisor = self._core.supervisor
        self.name = name
        self.policy = self._sync.policy

    @property
    def queued_puts(self) -> int:
        """Puts accepted and not yet handed to the worker (at most the policy's put_buffer)."""
        return self._sync.queued_puts

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

    # ----------------------------------------------------------------- zenoh
    async def info(self, timeout: float | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._core.arun(self._core.info_request(timeout))
        return result

    async def put(
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
        """Fire-and-forget like Sidecar.put; with the put buffer full it awaits room (off the loop)."""
        put = functools.partial(
            self._sync.put,
            key_expr,
            payload,
            encoding=encoding,
            congestion_control=congestion_control,
            priority=priority,
            express=express,
            attachment=attachment,
        )
        if self._sync.queued_puts < self.policy.put_buffer:
            put()
        else:
            await asyncio.to_thread(put)

    async def flush(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self._sync.flush, timeout)

    async def delete(
        self,
        key_expr: str,
        *,
        congestion_control: str | None = None,
        priority: str | None = None,
        express: bool | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish a deletion of ``key_expr`` (after every earlier put)."""
        request = self._core.delete_request(key_expr, congestion_control, priority, express, timeout)
        await self.flush(timeout)
        await self._core.arun(request)

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
        request = self._core.get_request(
            selector, payload, timeout=timeout, target=target, encoding=encoding, attachment=attachment
        )
        replies: list[Reply] = await self._core.arun(request)
        return replies

    async def liveliness_get(self, key_expr: str, timeout: float = 10.0) -> list[str]:
        result: list[str] = await self._core.arun(self._core.liveliness_get_request(key_expr, timeout))
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
        key = check_key(key_expr, "queryable")
        send_answer = self._core.send_answer

        async def answer(item: tuple[int, Query]) -> None:
            query_id, query = item
            try:
                result = handler(query)
                if inspect.isawaitable(result):
                    result = await result
            except Exception as exc:
                send_answer(key, query_id, query, None, exc)
            else:
                send_answer(key, query_id, query, result, None)

        return await self._declare(Queryable, "queryable", key, (complete,), answer)

    async def liveliness_token(self, key_expr: str) -> LivelinessToken:
        key = check_key(key_expr, "token")
        return await self._core.adeclare(LivelinessToken(self._core, "token", next(ids), key, (), None))

    async def _declare(
        self,
        cls: type[_D],
        kind: str,
        key_expr: str,
        arguments: tuple[Any, ...],
        callback: Callable[[Any], Any] | None,
    ) -> _D:
        key = check_key(key_expr, kind)
        delivery: AsyncDelivery[Any] = AsyncDelivery(
            asyncio.get_running_loop(),
            callback,
            f"{self.name}:{key_expr}",
            limit=self.policy.subscription_backlog,
            stuck_after=self.policy.stuck_callback_after,
        )
        return await self._core.adeclare(cls(self._core, kind, next(ids), key, arguments, delivery))

    # ----------------------------------------------------------------- hosted objects
    async def host(self, classname: str | dict[str, Any], *args: Any, **kwargs: Any) -> AsyncHostedObject:
        """See Sidecar.host; the proxy's methods and attribute reads are awaitable. Every public name
        of the object reaches it; ``await boss_sidecar.aset(proxy, name, value)`` writes an attribute,
        ``await boss_sidecar.adrop(proxy)`` drops the object."""
        obj_id, shape = await self._core.ahost(classname, args, kwargs)
        return AsyncHostedObject(self._core, obj_id, shape)

    def expose(self, obj: object) -> ObjectRef:
        return self._core.expose(obj)
