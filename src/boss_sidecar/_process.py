"""What the supervisor needs of a worker process (spawned, or forked by the template) and its environment."""

from __future__ import annotations

import os
import sys
from typing import Protocol


class WorkerProcess(Protocol):
    """The part of ``subprocess.Popen`` supervision uses; ``wait`` raises ``subprocess.TimeoutExpired``."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...


def worker_environment() -> dict[str, str]:
    """The host's environment, plus its ``sys.path`` so the worker imports what the host can."""
    env = dict(os.environ)
    paths = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(paths + ([existing] if existing else []))
    return env
