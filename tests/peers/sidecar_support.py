"""Helpers for the sidecar tests: bounded polling, line-driven host programs, process checks.

Used by the test modules (as ``peers.sidecar_support``) and by the host programs in this folder
(as ``sidecar_support``, the folder being their ``sys.path[0]``). Imports nothing of zenoh.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from boss_sidecar.testing import wait_until

HERE = Path(__file__).parent
BOUND = 20.0
"""No wait in these tests is longer than this (well under pytest-timeout)."""


class Collector:
    """A subscription callback that keeps what it gets; ``wait`` blocks (bounded) for more."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = threading.Condition()

    def __call__(self, item: Any) -> None:
        with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    def wait(self, count: int, timeout: float = BOUND) -> list[Any]:
        """The first ``count`` items, once they are there."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.items) >= count, timeout):
                raise AssertionError(f"{len(self.items)} of {count} items within {timeout:g}s: {self.items[-3:]}")
            return self.items[:count]

    def wait_for(self, match: Callable[[Any], bool], timeout: float = BOUND) -> Any:
        """The first item ``match`` accepts, once there is one."""
        with self._changed:
            if not self._changed.wait_for(lambda: any(match(item) for item in self.items), timeout):
                raise AssertionError(f"no matching item within {timeout:g}s: {self.items[-3:]}")
            return next(item for item in self.items if match(item))


def process_gone(pid: int, create_time: float) -> bool:
    """The process that had ``pid`` and ``create_time`` has ended (a zombie counts as ended)."""
    try:
        process = psutil.Process(pid)
        return process.create_time() != create_time or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, create_time: float, timeout: float = BOUND) -> float:
    """Seconds until the process ended; AssertionError if it still runs after ``timeout``."""
    started = time.monotonic()
    wait_until(lambda: process_gone(pid, create_time), timeout, f"process {pid} to end", interval=0.005)
    return time.monotonic() - started


def child_environment(**extra: str) -> dict[str, str]:
    """The environment for a host program; its log records go to its stderr."""
    env = dict(os.environ)
    env.update(extra)
    return env


class LineProgram:
    """A program in this folder driven over stdin/stdout lines: ``send`` a command, ``expect`` a reply.

    Every reply is one line ``<word> <json>``. Reading happens on a thread so every wait is bounded.
    """

    def __init__(self, program: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / program), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or child_environment(),
            text=True,
        )
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def send(self, *words: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(" ".join(str(word) for word in words) + "\n")
        self.process.stdin.flush()

    def expect(self, word: str, timeout: float = BOUND) -> Any:
        """The JSON value of the next line, which must start with ``word``."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {word!r} line within {timeout:g}s; stderr:\n{self.stderr}") from None
        if line is None:
            raise AssertionError(f"program ended before {word!r}; stderr:\n{self.stderr}")
        head, _, rest = line.partition(" ")
        assert head == word, f"expected {word!r}, got {line!r}; stderr:\n{self.stderr}"
        return json.loads(rest) if rest else None

    def ask(self, *words: object, reply: str | None = None) -> Any:
        """``send`` then ``expect`` the reply named like the command (or ``reply``)."""
        self.send(*words)
        return self.expect(reply or str(words[0]))

    def finish(self, timeout: float = BOUND) -> int:
        """Close stdin and wait for the exit code; kill (and fail) after ``timeout``."""
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"program did not exit within {timeout:g}s; stderr:\n{self.stderr}") from None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(BOUND)


@contextlib.contextmanager
def line_program(program: str, *args: str, env: dict[str, str] | None = None) -> Iterator[LineProgram]:
    """A LineProgram that is always reaped (killed if still running) at the end of the block."""
    running = LineProgram(program, *args, env=env)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.kill()


def logs_to_stderr() -> None:
    """For the programs: keep stdout for replies, send the log records to stderr."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)


def reply(word: str, value: object = None) -> None:
    """For the programs: answer one command with a ``<word> <json>`` line."""
    print(word, json.dumps(value), flush=True)


def ok_line(completed: subprocess.CompletedProcess[str]) -> Any:
    """The JSON of a finished program's last line, ``ok <json>``, after checking it exited 0."""
    assert completed.returncode == 0, completed.stderr[-3000:]
    word, _, value = completed.stdout.strip().splitlines()[-1].partition(" ")
    assert word == "ok", completed.stdout
    return json.loads(value)


def run_program(program: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a program of this folder to its end (bounded); its output is returned, not shown."""
    return subprocess.run(
        [sys.executable, str(HERE / program), *args],
        capture_output=True,
        text=True,
        env=env or child_environment(),
        timeout=BOUND * 3,
        stdin=subprocess.DEVNULL,
        check=False,
    )
