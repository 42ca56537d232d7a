"""What tests of a launcher process share: its workers, and a teardown that leaves none of them behind."""

from __future__ import annotations

import os
import signal
import subprocess

import psutil

from peers.fault_support import worker_gone
from peers.sidecar_support import BOUND


class LauncherProcess:
    """A launcher subprocess (``self.process``) started by a test."""

    process: subprocess.Popen[bytes]

    def worker_pids(self) -> list[int]:
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [child.pid for child in children if not worker_gone(child.pid)]

    def close(self) -> None:
        """Teardown: whatever the test did, no launcher and no worker is left behind."""
        workers = self.worker_pids()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(BOUND)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for pid in workers:
            if not worker_gone(pid):
                os.kill(pid, signal.SIGKILL)
