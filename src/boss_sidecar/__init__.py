"""boss-sidecar: keep zenoh out of your process.

A supervised worker process owns the zenoh session; your code holds a proxy and talks to it
over a pipe, wire-compatible with BOSS's ``boss.multiprocess``.
"""

from boss_sidecar.errors import (
    CallTimeout,
    ConfigError,
    EncodeError,
    MessageTooLarge,
    ProtocolError,
    RemoteError,
    SidecarCrashed,
    SidecarError,
    SidecarUnavailable,
)

__version__ = "0.1.0"

__all__ = [
    "CallTimeout",
    "ConfigError",
    "EncodeError",
    "MessageTooLarge",
    "ProtocolError",
    "RemoteError",
    "SidecarCrashed",
    "SidecarError",
    "SidecarUnavailable",
    "__version__",
]
