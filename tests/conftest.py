"""Shared fixtures: hermetic zenoh configurations and sidecars that are always stopped."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import free_port, peer_config, wait_until

_SESSION_MARK = "BOSS_SIDECAR_TEST_SESSION"


def _our_workers(mark: str) -> list[int]:
    """Live worker processes started during this test session, at any depth (they inherit the mark)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        try:
            if "boss_sidecar.worker" not in (process.info["cmdline"] or []):
                continue
            if process.info["status"] != psutil.STATUS_ZOMBIE and process.environ().get(_SESSION_MARK) == mark:
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def no_worker_outlives_the_session() -> Iterator[None]:
    """Every worker any test started (directly or through a host program) is gone at the end."""
    mark = os.environ[_SESSION_MARK] = uuid.uuid4().hex
    yield
    wait_until(lambda: not _our_workers(mark), 10.0, f"no worker left by the tests (left: {_our_workers(mark)})")


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
