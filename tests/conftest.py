"""Shared fixtures: hermetic zenoh configurations and sidecars that are always stopped."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from boss_sidecar.async_sidecar import AsyncSidecar
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import free_port, peer_config, wait_until
from peers.fault_support import live_workers

_SESSION_MARK = "BOSS_SIDECAR_TEST_SESSION"
pytest_plugins = ("peers.boss_fixtures",)  # router, couch and boss launchers for the BOSS tests


@pytest.fixture(scope="session", autouse=True)
def no_worker_outlives_the_session() -> Iterator[None]:
    """Every worker any test started (directly or through a host program) is gone at the end."""
    mark = os.environ[_SESSION_MARK] = uuid.uuid4().hex
    yield

    def ours() -> list[int]:
        return live_workers(lambda process: process.environ().get(_SESSION_MARK) == mark)

    try:
        wait_until(lambda: not ours(), 10.0, "no worker left by the tests")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still running: {ours()}") from None


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


@pytest.fixture
async def make_async() -> AsyncIterator[Callable[..., Awaitable[AsyncSidecar]]]:
    """Start async sidecars (peer on loopback unless ``zenoh=`` is given); all stopped at teardown."""
    started: list[AsyncSidecar] = []

    async def make(name: str = "async", zenoh: Any = None, **policy: Any) -> AsyncSidecar:
        sidecar = AsyncSidecar(name, peer_config() if zenoh is None else zenoh, **policy)
        started.append(sidecar)
        return await sidecar.start()

    yield make
    for sidecar in started:
        await sidecar.stop(timeout=5)
