"""boss-sidecar: keep zenoh out of your process.

A supervised worker process owns the zenoh session; your code holds a proxy and talks to it
over a pipe, wire-compatible with BOSS's ``boss.multiprocess``. Importing this package never
imports zenoh.
"""

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
