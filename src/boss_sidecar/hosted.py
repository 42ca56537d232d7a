"""Proxies of objects hosted in the worker, whose every public name reaches the object.

A proxy has no public name of its own: an instrument's ``close``, ``stop``, ``reset`` or
``set_attribute`` is the instrument's. What the proxy itself does lives in module functions:
``drop(proxy)`` (``await adrop(proxy)``) tears the object down and stops replaying it after restarts,
and ``await aset(proxy, name, value)`` writes an attribute through an async proxy. The proxy's own
state sits under names no remote attribute can take (private names are never forwarded).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from boss_sidecar.errors import SidecarError
from boss_sidecar.worker_api import Op

if TYPE_CHECKING:
    from boss_sidecar._core import SidecarCore


class _HostedProxy:
    """What the sync and async proxies share: the object's number and class, the methods the worker
    reported, and attribute reads. Subclasses say how a call runs (a value, or an awaitable)."""

    __slots__ = ("__class_name", "__core", "__methods", "__obj_id")

    def __init__(self, core: SidecarCore, obj_id: int, shape: dict[str, Any]) -> None:
        object.__setattr__(self, "_HostedProxy__core", core)
        object.__setattr__(self, "_HostedProxy__obj_id", obj_id)
        object.__setattr__(self, "_HostedProxy__methods", frozenset(shape["methods"]))
        object.__setattr__(self, "_HostedProxy__class_name", shape["class"])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self.__methods:
            method = self._remote_method(name)
            method.__name__ = name
            return method
        return self._remote_read(name)

    def _remote_method(self, name: str) -> Callable[..., Any]:
        raise NotImplementedError

    def _remote_read(self, name: str) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<hosted {self.__class_name} #{self.__obj_id} in sidecar {self.__core.name}>"


def _core_of(proxy: _HostedProxy) -> SidecarCore:
    core: SidecarCore = object.__getattribute__(proxy, "_HostedProxy__core")
    return core


def _id_of(proxy: _HostedProxy) -> int:
    obj_id: int = object.__getattribute__(proxy, "_HostedProxy__obj_id")
    return obj_id


class HostedObject(_HostedProxy):
    """Proxy of an object living in the worker: method calls, reads and writes run there."""

    __slots__ = ()

    def _remote_method(self, name: str) -> Callable[..., Any]:
        core, obj_id = _core_of(self), _id_of(self)

        def method(*args: Any, **kwargs: Any) -> Any:
            return core.call(Op.CALL_OBJECT, (obj_id, name, args, kwargs))

        return method

    def _remote_read(self, name: str) -> Any:
        return _core_of(self).call(Op.GET_OBJECT_ATTRIBUTE, (_id_of(self), name))

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            raise AttributeError(f"cannot set private attribute {name!r} of a hosted object")
        _core_of(self).call(Op.SET_OBJECT_ATTRIBUTE, (_id_of(self), name, value))


class AsyncHostedObject(_HostedProxy):
    """Proxy of an object in the worker: ``await obj.method(...)``, ``await obj.attribute``,
    ``await boss_sidecar.aset(obj, name, value)``."""

    __slots__ = ()

    def _remote_method(self, name: str) -> Callable[..., Any]:
        core, obj_id = _core_of(self), _id_of(self)

        async def method(*args: Any, **kwargs: Any) -> Any:
            return await core.acall(Op.CALL_OBJECT, (obj_id, name, args, kwargs))

        return method

    def _remote_read(self, name: str) -> Any:
        return _core_of(self).acall(Op.GET_OBJECT_ATTRIBUTE, (_id_of(self), name))

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError(f"use 'await boss_sidecar.aset(proxy, {name!r}, value)' on an async hosted object")

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]} (async)>"


def drop(proxy: HostedObject) -> None:
    """Tear the object down in the worker and stop replaying it after restarts; a worker that is
    gone holds nothing, so that is not an error."""
    if not isinstance(proxy, HostedObject):
        raise TypeError(f"drop() takes a HostedObject, got {type(proxy).__name__} (use 'await adrop(proxy)')")
    core, obj_id = _core_of(proxy), _id_of(proxy)
    core.hosted.pop(obj_id, None)
    with contextlib.suppress(SidecarError):
        core.call(Op.DROP_OBJECT, (obj_id,))


async def adrop(proxy: AsyncHostedObject) -> None:
    """``drop`` for an async proxy."""
    if not isinstance(proxy, AsyncHostedObject):
        raise TypeError(f"adrop() takes an AsyncHostedObject, got {type(proxy).__name__} (use 'drop(proxy)')")
    core, obj_id = _core_of(proxy), _id_of(proxy)
    core.hosted.pop(obj_id, None)
    with contextlib.suppress(SidecarError):
        await core.acall(Op.DROP_OBJECT, (obj_id,))


async def aset(proxy: AsyncHostedObject, name: str, value: Any) -> None:
    """Write attribute ``name`` of the object behind an async proxy."""
    if name.startswith("_"):
        raise AttributeError(f"cannot set private attribute {name!r} of a hosted object")
    await _core_of(proxy).acall(Op.SET_OBJECT_ATTRIBUTE, (_id_of(proxy), name, value))
