"""boss-sidecar: keep zenoh out of your process.

A supervised worker process owns the zenoh session; your code holds a proxy and talks to it
over a pipe, wire-compatible with BOSS's ``boss.multiprocess``. Importing this package never
imports zenoh. Its names are imported on first use (PEP 562): a worker, the template or a
script that needs one module does not pay for asyncio and the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from boss_sidecar.async_sidecar import AsyncSidecar, AsyncSubscription
    from boss_sidecar.errors import (
        CallTimeout,
        ConfigError,
        EncodeError,
        MessageTooLarge,
        ProtocolError,
        PutsUnconfirmed,
        RemoteError,
        SidecarCrashed,
        SidecarError,
        SidecarUnavailable,
        ZenohError,
    )
    from boss_sidecar.health import Health
    from boss_sidecar.hosted import AsyncHostedObject, HostedObject, adrop, aset, drop
    from boss_sidecar.policy import SidecarPolicy
    from boss_sidecar.samples import ObjectRef, Query, QueryReply, Reply, Sample
    from boss_sidecar.sidecar import LivelinessToken, Queryable, Sidecar, Subscription
    from boss_sidecar.states import SidecarState, StateChange

__version__ = "0.1.0"

_HOME = {
    "boss_sidecar.async_sidecar": ("AsyncSidecar", "AsyncSubscription"),
    "boss_sidecar.errors": (
        "CallTimeout",
        "ConfigError",
        "EncodeError",
        "MessageTooLarge",
        "ProtocolError",
        "PutsUnconfirmed",
        "RemoteError",
        "SidecarCrashed",
        "SidecarError",
        "SidecarUnavailable",
        "ZenohError",
    ),
    "boss_sidecar.health": ("Health",),
    "boss_sidecar.hosted": ("AsyncHostedObject", "HostedObject", "adrop", "aset", "drop"),
    "boss_sidecar.policy": ("SidecarPolicy",),
    "boss_sidecar.samples": ("ObjectRef", "Query", "QueryReply", "Reply", "Sample"),
    "boss_sidecar.sidecar": ("LivelinessToken", "Queryable", "Sidecar", "Subscription"),
    "boss_sidecar.states": ("SidecarState", "StateChange"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'boss_sidecar' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])


__all__ = [
    "AsyncHostedObject",
    "AsyncSidecar",
    "AsyncSubscription",
    "CallTimeout",
    "ConfigError",
    "EncodeError",
    "Health",
    "HostedObject",
    "LivelinessToken",
    "MessageTooLarge",
    "ObjectRef",
    "ProtocolError",
    "PutsUnconfirmed",
    "Query",
    "QueryReply",
    "Queryable",
    "RemoteError",
    "Reply",
    "Sample",
    "Sidecar",
    "SidecarCrashed",
    "SidecarError",
    "SidecarPolicy",
    "SidecarState",
    "SidecarUnavailable",
    "StateChange",
    "Subscription",
    "ZenohError",
    "__version__",
    "adrop",
    "aset",
    "drop",
]
