"""One worker process and its channel (an incarnation), and the side effects that make and end one.

A restart makes a new incarnation; ``ProcessBackend`` holds spawning, signalling and the clock so
tests (and the template, ``_template_backend``) can replace them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from boss_sidecar._process import WorkerProcess, worker_environment
from boss_sidecar.health import ProcessProbe
from boss_sidecar.policy import SidecarPolicy
from boss_sidecar.rpc import Endpoint
from boss_sidecar.stopping import WORKER_STOP_SHARE


class ProcessBackend:
    """The side effects of supervision (spawning, signalling, the clock); tests may replace it."""

    def spawn(self, command: list[str], channel_fd: int, env: dict[str, str]) -> WorkerProcess:
        # Its own process group: if the host dies while the worker is stopped (SIGSTOP, a debugger),
        # the orphaned group gets SIGHUP and SIGCONT from the kernel, so the worker cannot linger.
        return subprocess.Popen(
            command, pass_fds=[channel_fd], env=env, stdin=subprocess.DEVNULL, close_fds=True, process_group=0
        )

    def kill(self, process: WorkerProcess, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)

    def now(self) -> float:
        return time.monotonic()


@dataclass
class Incarnation:
    """One worker process and its channel; a restart makes a new one."""

    number: int
    process: WorkerProcess
    endpoint: Endpoint
    started: float
    probe: ProcessProbe
    kill_reason: str | None = None
    exit_expected: bool = False
    cpu_over_since: float | None = None
    heartbeat_rtt: float | None = None
    heartbeat_at: float | None = None
    ready_at: float | None = None
    log: Any = field(default=None)


def worker_command(name: str, policy: SidecarPolicy, channel_fd: int, number: int) -> list[str]:
    """The command line of worker number ``number``, talking over ``channel_fd``."""
    return [
        sys.executable,
        "-m",
        "boss_sidecar.worker",
        "--fd",
        str(channel_fd),
        "--parent-pid",
        str(os.getpid()),
        "--log-level",
        policy.log_level,
        "--stop-bound",
        f"{policy.stop_timeout * WORKER_STOP_SHARE:.3f}",
        "--incarnation",
        str(number),
        "--busy-wait",
        repr(policy.busy_wait),
        "--",  # what follows is the name, never read as an option, whatever it looks like
        name,
    ]


def spawn_incarnation(
    name: str,
    number: int,
    policy: SidecarPolicy,
    *,
    backend: ProcessBackend,
    make_endpoint: Callable[[Connection, int], Endpoint],
    log: Any,
) -> Incarnation:
    """Spawn worker number ``number`` with a fresh socketpair; the host keeps one end as its endpoint."""
    parent_end, child_end = multiprocessing.Pipe(duplex=True)
    command = worker_command(name, policy, child_end.fileno(), number)
    started = backend.now()
    try:
        process = backend.spawn(command, child_end.fileno(), worker_environment())
    except BaseException:
        parent_end.close()
        raise
    finally:
        child_end.close()
    log = log.bind(worker_pid=process.pid, incarnation=number)
    endpoint = make_endpoint(parent_end, number)
    return Incarnation(number, process, endpoint, started, ProcessProbe(process.pid), log=log)


__all__ = ["Incarnation", "ProcessBackend", "spawn_incarnation", "worker_command"]
