"""What the supervisor needs of a worker process: a spawned ``Popen`` or a worker the template forked."""

from __future__ import annotations

from typing import Protocol


class WorkerProcess(Protocol):
    """The part of ``subprocess.Popen`` supervision uses; ``wait`` raises ``subprocess.TimeoutExpired``."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...
