"""Shared fixtures: hermetic zenoh configurations and sidecars that are always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import free_port, peer_config


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def make_sidecar() -> Iterator[Callable[..., Sidecar]]:
    """Start sidecars (peer on loopback unless ``zenoh=`` is given); all are stopped at teardown."""
    started: list[Sidecar] = []

    def make(name: str = "test", zenoh: Any = None, **policy: Any) -> Sidecar:
        sidecar = Sidecar(name, peer_config() if zenoh is None else zenoh, **policy)
        started.append(sidecar)
        return sidecar.start()

    yield make
    for sidecar in started:
        sidecar.stop(timeout=5)
