"""What tests of a launcher process share: its workers, and a teardown that leaves none of them behind."""

from __future__ import annotations

import os
import signal
import subprocess

import psutil

from peers.fault_support import live_workers, worker_gone
from peers.sidecar_support import BOUND


class LauncherProcess:
    """A launcher subprocess (``self.process``) started by a test."""

    process: subprocess.Popen[bytes]

    def descendants(self) -> list[psutil.Process]:
        """Its workers and the template they are forked from (the template's children)."""
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def worker_pids(self) -> list[int]:
        return live_workers(lambda _process: True, self.descendants())

    def close(self) -> None:
        """Teardown: whatever the test did, no launcher, template or worker is left behind."""
        left = [process.pid for process in self.descendants()]
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(BOUND)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for pid in left:
            if not worker_gone(pid):
                os.kill(pid, signal.SIGKILL)
