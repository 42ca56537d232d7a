"""Worker program: ``python -m boss_sidecar.worker --fd N``. Never imported by the host.

It serves a WorkerService on the channel inherited as file descriptor N, forwards its logs to
the host, and exits by itself when the host stops it, dies (channel EOF or the parent-death
signal) or sends SIGTERM. It always leaves through ``os._exit`` after a bounded clean-up, because
zenoh can hang a normal interpreter exit (zenoh-python #434).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import select
import signal
import threading
import traceback
from collections.abc import MutableMapping
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

import structlog

from boss_sidecar.logs import get_logger, record_fields
from boss_sidecar.rpc import DEFAULT_BUSY_WAIT, Endpoint
from boss_sidecar.stopping import bounded, finish_worker
from boss_sidecar.worker.service import WorkerService
from boss_sidecar.worker_api import EventKind

PR_SET_PDEATHSIG = 1
PARENT_DEATH_SIGNAL = signal.SIGUSR2
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
MALLOC_MMAP_THRESHOLD = 4 * 1024 * 1024
MALLOC_TRIM_THRESHOLD = 32 * 1024 * 1024


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


class _LogForwarder:
    """structlog's last processor and a logging handler in one: records go to the host."""

    def __init__(self, service: WorkerService, incarnation: int) -> None:
        self._service = service
        self._stamp = {"worker_pid": os.getpid(), "incarnation": incarnation}

    def __call__(self, _logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        record = {key: _plain(value) for key, value in event_dict.items()}
        record.setdefault("level", method)
        record.update(self._stamp)  # stamped here: a late record must not borrow the next worker's pid
        self._service._push(EventKind.LOGS, record)
        raise structlog.DropEvent


class _StdlibToHost(logging.Handler):
    """Records of the logging module (ours, and libraries' such as HEROS's) reach the host too."""

    def __init__(self, forward: _LogForwarder) -> None:
        super().__init__()
        self._forward = forward

    def emit(self, record: logging.LogRecord) -> None:
        event, fields = record_fields(record)
        fields.update(event=event, logger=record.name)
        if record.exc_info:
            fields["exception"] = "".join(traceback.format_exception(*record.exc_info))
        with contextlib.suppress(structlog.DropEvent):
            self._forward(None, record.levelname.lower(), fields)


def _configure_logging(service: WorkerService, level: str, incarnation: int) -> None:
    """This process is ours: every record, of the logging module or of structlog, goes to the host."""
    forward = _LogForwarder(service, incarnation)
    structlog.configure(  # for hosted code that logs with structlog's defaults
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            forward,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    root.handlers = [_StdlibToHost(forward)]
    root.setLevel(level.upper())


class _Done:
    """Set when the worker should leave; the main thread sleeps in ``wait`` until then.

    Python runs signal handlers on the main thread only, but the kernel hands a process's SIGTERM
    to any thread that does not block it (zenoh's, the reader's). A main thread asleep on a lock
    is not woken when another thread takes the signal: the handler would wait, and the worker live
    on, for good. So the main thread sleeps reading the signal wakeup fd, which the C-level handler
    writes on whichever thread took the signal; ``set`` writes there too.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(self._read, True)  # the main thread sleeps reading it
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)  # main thread only: main() runs there

    def set(self) -> None:
        self._event.set()
        with contextlib.suppress(BlockingIOError):  # full: the main thread wakes all the same
            os.write(self._write, b"\0")

    def wait(self) -> None:
        """Until ``set``: woken by ``set`` and by every signal with a handler, whichever thread took it."""
        while not self._event.is_set():
            os.read(self._read, 4096)


def _watch_parent(parent_pid: int, done: _Done) -> None:
    """Linux: ask for a signal when the parent dies; ignore it if only the spawning thread ended."""

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        if os.getppid() != parent_pid:
            done.set()

    signal.signal(PARENT_DEATH_SIGNAL, on_signal)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        done.set()


def _watch_host(host_pid: int, done: _Done) -> None:
    """A worker forked by the template: its parent is the template, so it watches the host by a pidfd."""
    try:
        pidfd = os.pidfd_open(host_pid)
    except OSError:  # the host is already gone
        done.set()
        return

    def wait() -> None:
        select.select([pidfd], [], [])
        done.set()

    threading.Thread(target=wait, name="host-watch", daemon=True).start()


def _tune_malloc() -> None:
    """glibc: keep buffers of a few hundred kB (messages to the host, large payloads) on the heap.

    By default each is a fresh mmap that the kernel must fault in and zero, then unmaps on free:
    with 64 KiB samples that cost the worker more CPU than everything else it does per sample.
    Freed memory up to MALLOC_TRIM_THRESHOLD stays with the worker for reuse.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc: keep its defaults
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m boss_sidecar.worker")
    parser.add_argument("--fd", type=int, required=True, help="inherited channel file descriptor")
    parser.add_argument("name", nargs="?", default="sidecar", help="the sidecar's name (after --)")
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--stop-bound", type=float, default=3.0, help="seconds allowed for a clean stop")
    parser.add_argument("--incarnation", type=int, default=1, help="stamped on every log record")
    parser.add_argument("--busy-wait", type=float, default=DEFAULT_BUSY_WAIT, help="seconds polled before sleeping")
    parser.add_argument("--forked", action="store_true", help="forked by the template: watch the host by a pidfd")
    args = parser.parse_args(argv)

    done = _Done()
    asked = threading.Event()  # a stop request or SIGTERM: exiting is what was wanted
    reason = {"why": "host closed the channel"}
    service = WorkerService(args.name)
    endpoint = Endpoint(
        Connection(args.fd),
        service,
        name=f"{args.name}/worker",
        on_stop=lambda why: bounded(lambda: service.stop(why), args.stop_bound),
        on_close=lambda _error: done.set(),
        describe=service._describe_call,
        dispatch=service._dispatch,
        callers_read=False,  # the worker mostly serves: its reader runs each call it reads
        busy_wait=args.busy_wait,
        start=False,
    )
    service._attach(endpoint)
    _configure_logging(service, args.log_level, args.incarnation)

    def on_term(signum: int, _frame: FrameType | None) -> None:
        reason["why"] = f"signal {signal.Signals(signum).name}"
        asked.set()
        done.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the host, which stops us in order
    if args.forked:
        _watch_host(args.parent_pid, done)
    else:
        _watch_parent(args.parent_pid, done)
    _tune_malloc()

    def stop_watch() -> None:
        endpoint.stop_acknowledged.wait()
        done.set()

    threading.Thread(target=stop_watch, name="stop-watch", daemon=True).start()
    endpoint.start()
    done.wait()

    stopped_politely = endpoint.stop_acknowledged.is_set()
    if not stopped_politely:
        get_logger("boss_sidecar.worker").info("worker exiting", reason=reason["why"])
    finish_worker(  # the stop sequence, both sides: boss_sidecar.stopping
        service.shutdown,
        lambda: endpoint.close("worker exiting"),
        stopped_politely=stopped_politely,
        signalled=asked.is_set(),
    )


if __name__ == "__main__":
    main()
