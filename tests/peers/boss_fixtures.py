"""Pytest fixtures of the BOSS tests (a plugin, see tests/conftest.py): a router, a CouchDB-like
server and ``boss-sidecar`` launchers, each stopped at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peers.boss_support import BossProcess, CouchServer, Router


@pytest.fixture
def router() -> Iterator[Router]:
    started = Router()
    yield started
    started.stop()


@pytest.fixture
def couch() -> Iterator[CouchServer]:
    server = CouchServer()
    yield server
    server.close()


@pytest.fixture
def boss(router: Router, tmp_path: Path) -> Iterator[Any]:
    started: list[BossProcess] = []

    def start(*args: str, run: Path | None = None) -> BossProcess:
        process = BossProcess(router, tmp_path, *args, run=run)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()
