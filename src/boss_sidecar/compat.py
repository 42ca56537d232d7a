"""A drop-in for BOSS's ``boss.multiprocess.MultiprocessRPC``, built on Endpoint, without polling.

Same constructor and method names; the subclass's own methods are what the peer may call
(BOSS calls some underscore names, e.g. ``_update_hero_status``, so those are allowed too).
Served requests and reply callbacks run on ``loop``, as in BOSS. What differs, on purpose:
replies arrive as soon as they are sent instead of every 10 ms, an error reply is logged
instead of killing the receive loop, and ``_rpc``/``_get_attribute`` return an awaitable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import structlog

from boss_sidecar.errors import SidecarError
from boss_sidecar.rpc import Endpoint

POLLING_INTERVAL = 0.01
"""Kept importable for code that reads it; nothing here polls."""

_log = structlog.get_logger("boss_sidecar.compat")


def _subclass_names(instance: object, base: type) -> set[str]:
    """Names the subclasses of ``base`` define: the API BOSS code serves to its peer."""
    names: set[str] = set()
    for cls in type(instance).__mro__:
        if cls is base:
            break
        names.update(name for name in vars(cls) if not name.startswith("__"))
    return names


class MultiprocessRPC:
    """RPC between two processes over a pipe, with BOSS's method names."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pipe: Connection) -> None:
        self._loop = loop
        self._pipe = pipe
        self._pending_results: dict[int, Callable[[Any], None]] = {}
        self._shutdown = False
        self._communicatation_task: asyncio.Future[None] = loop.create_future()  # BOSS's spelling
        self._endpoint = Endpoint(
            pipe,
            target=self,
            name=type(self).__name__,
            allow=_subclass_names(self, MultiprocessRPC),
            loop=loop,
            on_close=self._channel_closed,
            callers_read=True,  # both ends call and serve: a caller reads its own reply (see Endpoint)
        )

    async def _communicate(self) -> None:
        """Runs until ``_rpc_stop``; BOSS code awaits this task to keep its loop alive."""
        await asyncio.shield(self._communicatation_task)

    def _rpc(
        self, method_name: str, *args: Any, _cb: Callable[[Any], None] | None = None, **kwargs: Any
    ) -> asyncio.Future[Any]:
        """Call ``method_name`` on the peer; ``_cb(result)`` runs on the loop when it answers."""
        return self._dispatch(f"call {method_name!r}", lambda: self._endpoint.arequest(method_name, args, kwargs), _cb)

    def _get_attribute(self, name: str, local_name: str | None = None) -> asyncio.Future[Any]:
        """Read the peer's attribute ``name`` into ``self.<local_name>`` when it answers."""
        target = name if local_name is None else local_name

        def store(value: Any) -> None:
            setattr(self, target, value)

        return self._dispatch(f"get {name!r}", lambda: self._endpoint.aget_attribute(name), store)

    def _set_attribute(self, name: str, value: object) -> None:
        """Write the peer's attribute ``name``; one-way, as BOSS does."""
        self._endpoint.set_attribute_nowait(name, value)

    def _rpc_stop(self) -> None:
        """Stop talking: close the channel and end ``_communicatation_task``."""
        self._shutdown = True
        self._endpoint.close("stopped by _rpc_stop")
        self._loop.call_soon_threadsafe(self._finish)

    def _dispatch(
        self, what: str, start: Callable[[], Any], callback: Callable[[Any], None] | None
    ) -> asyncio.Future[Any]:
        async def run() -> Any:
            try:
                result = await start()
            except SidecarError as exc:
                _log.warning("request failed", request=what, error=str(exc))
                raise
            except Exception as exc:
                _log.error("peer raised", request=what, error=repr(exc))
                raise
            if callback is not None:
                callback(result)
            return result

        task = asyncio.run_coroutine_threadsafe(run(), self._loop)
        wrapped = asyncio.wrap_future(task, loop=self._loop)
        wrapped.add_done_callback(_consume)
        return wrapped

    def _channel_closed(self, error: SidecarError) -> None:
        self._shutdown = True
        with contextlib.suppress(RuntimeError):  # loop already closed
            self._loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self._communicatation_task.done():
            self._communicatation_task.set_result(None)


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark an unawaited failure as seen (it was logged) so asyncio does not warn about it."""
    if not future.cancelled():
        future.exception()
