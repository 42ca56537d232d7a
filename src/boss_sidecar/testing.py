"""Helpers for testing code that uses boss-sidecar: hermetic zenoh configurations on loopback.

Every configuration here turns multicast and gossip scouting off and uses explicit
``tcp/127.0.0.1`` endpoints, so tests never reach beyond this machine.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")


def _no_scouting() -> dict[str, Any]:
    """Built afresh for every configuration: a caller changing one must not change the next."""
    return {"multicast": {"enabled": False}, "gossip": {"enabled": False}}


def wait_until(
    predicate: Callable[[], _T], timeout: float = 30.0, what: str = "condition", *, interval: float = 0.02
) -> _T:
    """Poll ``predicate`` every ``interval`` seconds until it returns something truthy (returned);
    AssertionError after ``timeout``.

    For tests that wait for a state instead of sleeping a guessed time.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g}s (last value: {value!r})")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def peer_config(listen_port: int | None = None, connect_ports: tuple[int, ...] = ()) -> dict[str, Any]:
    """A peer that listens on 127.0.0.1 (a free port by default) and connects to ``connect_ports``."""
    port = free_port() if listen_port is None else listen_port
    config: dict[str, Any] = {
        "mode": "peer",
        "listen": {"endpoints": [f"tcp/127.0.0.1:{port}"]},
        "scouting": _no_scouting(),
    }
    if connect_ports:
        config["connect"] = {"endpoints": [f"tcp/127.0.0.1:{p}" for p in connect_ports]}
    return config


def router_config(port: int) -> dict[str, Any]:
    """A router listening on 127.0.0.1:``port`` (a Python session can be the router; no zenohd needed)."""
    return {"mode": "router", "listen": {"endpoints": [f"tcp/127.0.0.1:{port}"]}, "scouting": _no_scouting()}


def client_config(router_port: int) -> dict[str, Any]:
    """A client of the router on 127.0.0.1:``router_port``."""
    return {
        "mode": "client",
        "connect": {"endpoints": [f"tcp/127.0.0.1:{router_port}"]},
        "scouting": {"multicast": {"enabled": False}},
    }
