"""A class the tests host in a worker whose methods end the way vendor code sometimes does."""

from __future__ import annotations

import gc
import os
import sys


class Raiser:
    """Methods that raise what is no ``Exception``: ``sys.exit``, an interrupt, a generator's exit."""

    def exit(self, code: int) -> None:
        sys.exit(code)

    def interrupt(self) -> None:
        raise KeyboardInterrupt("vendor code gave up")

    def generator_exit(self) -> None:
        raise GeneratorExit

    def fail(self) -> None:
        raise ValueError("the instrument refused")

    def worker_pid(self) -> int:
        return os.getpid()

    def other_running_calls(self) -> int:
        """Served calls this worker's endpoint is running besides this one."""
        from boss_sidecar.rpc import Endpoint

        return sum(found.running_count for found in gc.get_objects() if isinstance(found, Endpoint)) - 1
