"""Supervision policy: restart, backoff, timeouts, heartbeats and resource limits, validated."""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass
from typing import Any

from boss_sidecar.errors import ConfigError
from boss_sidecar.logs import LOG_LEVELS
from boss_sidecar.rpc import DEFAULT_BUSY_WAIT, MAX_BUSY_WAIT

RESTART_POLICIES = ("never", "on-failure", "always")


_OPTIONAL = ("max_rss_mb", "max_cpu_percent")  # None: no limit
_MAY_BE_ZERO = ("backoff_initial", "backoff_jitter", "max_restarts", "busy_wait")


def _check_number(name: str, value: object) -> None:
    """A numeric policy field: a finite number a lock can wait, positive (or 0 where that means 'none')."""
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if value > threading.TIMEOUT_MAX:  # inf too: every wait is bounded, and waits longer overflow
        raise ConfigError(f"{name} must be finite and at most {threading.TIMEOUT_MAX:g}, got {value!r}")
    if name in _MAY_BE_ZERO:
        if value < 0:
            raise ConfigError(f"{name} must be 0 or more, got {value!r}")
    elif value <= 0:
        raise ConfigError(f"{name} must be positive, got {value!r}")


@dataclass(frozen=True, slots=True)
class SidecarPolicy:
    """Every option a sidecar is supervised by; ``Sidecar(name, **options)`` fills it."""

    restart: str = "on-failure"
    """never | on-failure | always: when a worker that exited is started again. As systemd's on-failure,
    on-failure leaves a worker that exited 0 or was terminated by a SIGTERM from outside stopped: someone
    asked it to go. A start or replay that fails (or times out) is a failure under the policy too."""
    max_restarts: int = 5
    """Restart intensity: more than this many restarts within ``restart_window`` means FAILED."""
    restart_window: float = 60.0
    backoff_initial: float = 0.1
    """Delay before the second of consecutive restarts (the first is immediate); doubles each time."""
    backoff_factor: float = 2.0
    backoff_max: float = 10.0
    backoff_jitter: float = 0.1
    """Fraction of the delay added or removed at random, so sidecars do not restart in lockstep."""
    start_timeout: float = 30.0
    call_timeout: float = 30.0
    stop_timeout: float = 5.0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    """A worker that does not answer a heartbeat in this time is hung: it is killed and restarted."""
    max_rss_mb: float | None = None
    max_cpu_percent: float | None = None
    cpu_window: float = 30.0
    """How long CPU use must stay above ``max_cpu_percent`` before the worker is restarted."""
    put_buffer: int = 100_000
    """Puts queued in the host at most; a put beyond waits (up to ``call_timeout``) for room."""
    subscription_backlog: int = 100_000
    """Samples (or queries) waiting for one subscription's callback or iterator at most; beyond, new
    ones are dropped, counted in ``health().dropped_samples`` and logged (the queued ones stay in order)."""
    stuck_callback_after: float = 10.0
    """A callback running longer than this is reported in ``health().stuck_callbacks`` and logged."""
    log_level: str = "info"
    busy_wait: float = DEFAULT_BUSY_WAIT
    """Seconds a thread waiting for the peer's next message polls before it sleeps (both sides); 0: never.
    A wake from sleep costs tens of microseconds on a virtual machine, so this cuts a round trip's latency
    at the price of that much CPU per wait."""

    worker_template: bool = True
    """Fork workers from a shared template process that has imported zenoh and the worker code (Linux;
    cheaper workers, shared memory); False: every worker is a fresh interpreter."""

    def __post_init__(self) -> None:
        if self.restart not in RESTART_POLICIES:
            raise ConfigError(f"restart must be one of {', '.join(RESTART_POLICIES)}, got {self.restart!r}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name == "worker_template":
                if not isinstance(value, bool):
                    raise ConfigError(f"worker_template must be true or false, got {value!r}")
                continue
            if spec.name in ("restart", "log_level") or (value is None and spec.name in _OPTIONAL):
                continue
            _check_number(spec.name, value)
        for name in ("max_restarts", "put_buffer", "subscription_backlog"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"{name} must be a whole number, got {getattr(self, name)!r}")
        if self.busy_wait > MAX_BUSY_WAIT:
            raise ConfigError(f"busy_wait must be at most {MAX_BUSY_WAIT:g} s (it burns CPU), got {self.busy_wait!r}")
        if self.backoff_jitter >= 1:
            raise ConfigError(f"backoff_jitter must be below 1, got {self.backoff_jitter!r}")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SidecarPolicy:
        """Build from keyword options; an unknown one is an error that lists the known ones."""
        known = {spec.name for spec in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown sidecar option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**options)

    def backoff(self, consecutive: int, jitter: float) -> float:
        """Delay before restart number ``consecutive`` (1-based); ``jitter`` is in [-1, 1]."""
        if consecutive <= 1:
            return 0.0
        delay = min(self.backoff_max, self.backoff_initial * self.backoff_factor ** (consecutive - 2))
        return max(0.0, delay * (1 + self.backoff_jitter * jitter))
