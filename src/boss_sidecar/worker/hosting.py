"""What hosting an object in the worker takes: loading its class, host objects passed to it, releasing it.

``WorkerService`` hosts objects; these are its helpers that need no service state.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from boss_sidecar.errors import ConfigError
from boss_sidecar.logs import get_logger
from boss_sidecar.rpc import Endpoint
from boss_sidecar.samples import ObjectRef
from boss_sidecar.worker_api import HostOp

_log = get_logger("boss_sidecar.worker")


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


def takes_name(cls: type) -> bool:
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return "name" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def teardown(instance: Any) -> None:
    """Release a hosted object the way BOSS does: its ``_teardown``, then a HERO's ``_destroy_hero``."""
    for hook in ("_teardown", "_destroy_hero"):
        method = getattr(instance, hook, None)
        if callable(method):
            try:
                method()
            except Exception as exc:
                _log.warning("hosted object teardown failed", hook=hook, error=str(exc))


__all__ = ["RemoteObject", "load_class", "takes_name", "teardown"]
