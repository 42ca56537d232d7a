"""Peer programs for the real-process tests, and a helper that spawns one on a private channel."""

from __future__ import annotations

import contextlib
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

HERE = Path(__file__).parent
EXIT_TIMEOUT = 10.0


@contextlib.contextmanager
def spawned(program: str, *args: str) -> Iterator[tuple[Connection, subprocess.Popen[bytes]]]:
    """Run ``program`` (a file in this folder) in a fresh interpreter with the other end of a pipe.

    The child gets the channel's file descriptor as its first argument. On exit our end is closed
    and the child is reaped, killed if it has not ended within EXIT_TIMEOUT.
    """
    ours, theirs = multiprocessing.Pipe()
    fd = theirs.fileno()
    process = subprocess.Popen([sys.executable, str(HERE / program), str(fd), *args], pass_fds=[fd])
    theirs.close()
    try:
        yield ours, process
    finally:
        with contextlib.suppress(OSError):
            ours.close()
        try:
            process.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(EXIT_TIMEOUT)
