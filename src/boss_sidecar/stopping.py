"""How a sidecar stops, in one place: every step, its share of the deadline, and who runs it.

``Sidecar.stop(timeout)`` (default ``stop_timeout``) always returns within ``timeout``:

1. **flush** (host, ``FLUSH_SHARE`` of the time): puts still buffered in the host are sent and
   confirmed; what cannot be sent in time is reported, never dropped silently.
2. **stop request** (host -> worker, half of what is left): the worker's service undeclares
   everything, tears hosted objects down and closes the zenoh session (``WORKER_STOP_SHARE`` of
   the stop time bounds that), acknowledges, and exits 0 (``finish_worker``).
3. **SIGTERM** (half of what is then left): a worker that did not exit gets SIGTERM; it runs the
   same bounded clean-up and leaves by the signal (``finish_worker``).
4. **SIGKILL** (the rest): nothing can ignore it.
5. **the host's side**: the channel is closed, the supervisor's threads end, deliveries end
   (a callback that is stuck is left behind on its daemon thread; see ``delivery.py``).

``terminate`` is steps 2 to 4 for one worker process; ``finish_worker`` is the worker's own last
steps. Both sides leave through bounded waits only: zenoh can hang a close (zenoh-python #434).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from boss_sidecar.errors import SidecarError

if TYPE_CHECKING:
    from boss_sidecar._process import WorkerProcess

FLUSH_SHARE = 0.25
"""Share of ``Sidecar.stop``'s time for sending buffered puts; the rest is the worker's."""
WORKER_STOP_SHARE = 0.5
"""Share of the stop time the worker's own clean-up may take (passed as ``--stop-bound``)."""
EXIT_CHANNEL_LOST = 3
"""Worker exit status when the channel ended without a stop request or SIGTERM: a failure, so a living host
restarts the worker (exit 0 would read as a clean stop, and the on-failure policy would not restart)."""


class _Killer(Protocol):
    def kill(self, process: WorkerProcess, signum: int) -> None: ...


class _Stoppable(Protocol):
    @property
    def is_closed(self) -> bool: ...

    def request_stop(self, reason: str = ..., timeout: float | None = ...) -> None: ...

    def close(self, reason: str = ...) -> None: ...


def terminate(process: WorkerProcess, endpoint: _Stoppable, deadline: float, backend: _Killer, log: Any) -> None:
    """Steps 2 to 4 for one worker, inside ``deadline`` (monotonic): ask, SIGTERM, SIGKILL.

    Safe to run again (an interrupted stop is finished by a second one) and from two threads.
    """

    def remaining(share: float) -> float:
        return max(0.0, (deadline - time.monotonic()) * share)

    def exited(within: float) -> bool:
        try:
            process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            return False
        return True

    if process.returncode is None and not endpoint.is_closed:
        with contextlib.suppress(SidecarError):
            endpoint.request_stop("stop requested by host", timeout=remaining(0.5))
    if not exited(remaining(0.5)):
        log.warning("worker did not stop when asked; sending SIGTERM")
        backend.kill(process, signal.SIGTERM)
        if not exited(remaining(0.5)):
            log.warning("worker ignored SIGTERM; sending SIGKILL")
            backend.kill(process, signal.SIGKILL)
            exited(max(0.05, remaining(1.0)))
    endpoint.close("worker stopped")


def bounded(step: Callable[[], Any], seconds: float) -> None:
    """Run a clean-up step that might hang in zenoh; give up on it after ``seconds``."""
    thread = threading.Thread(target=step, name="shutdown", daemon=True)
    thread.start()
    thread.join(seconds)


def finish_worker(
    clean_up: Callable[[], Any], close_channel: Callable[[], Any], *, stopped_politely: bool, signalled: bool
) -> None:
    """The worker's last steps: bounded clean-up, then leave without the interpreter's exit (which
    zenoh can hang). A stop request exits 0; SIGTERM leaves by SIGTERM, so the host can tell an
    outside SIGTERM from a clean exit; a lost channel exits ``EXIT_CHANNEL_LOST``."""
    if not stopped_politely:
        bounded(clean_up, 0.6)  # after the host died the worker must be gone within 1 s
    bounded(close_channel, 0.2)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    if signalled and not stopped_politely:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
        os.kill(os.getpid(), signal.SIGTERM)
    os._exit(0 if stopped_politely or signalled else EXIT_CHANNEL_LOST)


def describe_exit(returncode: int | None, *, sigterm_sent: bool = True) -> str:
    """A worker's exit status in words; a SIGTERM the host did not send is named as coming from outside."""
    if returncode is None:
        return "still running"
    if returncode == -signal.SIGTERM and not sigterm_sent:
        return "terminated by SIGTERM from outside"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"
