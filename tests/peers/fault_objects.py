"""Classes the fault tests host in a worker (as ``peers.fault_objects:Name``). Imports nothing of zenoh."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import threading
import types
from typing import Any

FOREVER = 3600.0
""""Forever" for a worker thread: far beyond every test bound (the worker is killed long before)."""


class HoldsLock(Exception):
    """An exception that cannot be pickled: it carries a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


def _worker_only_error() -> type[Exception]:
    """An exception class in a module that exists only in this (worker) process."""
    module = sys.modules.get("fault_worker_only")
    if module is None:
        module = types.ModuleType("fault_worker_only")
        module.WorkerOnlyError = type("WorkerOnlyError", (Exception,), {"__module__": "fault_worker_only"})  # type: ignore[attr-defined]
        sys.modules["fault_worker_only"] = module
    error: type[Exception] = module.WorkerOnlyError
    return error


class CountsUnpickling:
    """Counts how often it was unpickled in this process (its ``__setstate__`` runs each time)."""

    unpickled = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).unpickled += 1
        self.__dict__.update(state)


class FaultEcho:
    """Echoes, hangs, hogs, and raises on request."""

    def __init__(self) -> None:
        self.value = 1
        self.blocking = 0
        """How many calls of ``block_forever`` are blocked now."""
        self._secret = "hidden"

    def echo(self, *values: Any) -> Any:
        return values[0] if len(values) == 1 else values

    def pid(self) -> int:
        return os.getpid()

    def block_forever(self, gate: Any = None) -> None:
        """Never returns (a thread waits on an event nobody sets); tells ``gate`` (a host object) first."""
        self.blocking += 1
        if gate is not None:
            gate.entered()
        threading.Event().wait(FOREVER)

    def hog_gil(self) -> None:
        """Never returns and never lets another thread run: a catastrophic regex holds the GIL."""
        re.match(r"(a+)+$", "a" * 64 + "b")

    def big(self, size: int) -> bytes:
        return b"x" * size

    def make_lock(self) -> Any:
        return threading.Lock()

    def raise_value_error(self, message: str) -> None:
        raise ValueError(message)

    def raise_unpicklable(self, message: str) -> None:
        raise HoldsLock(message)

    def raise_worker_only(self, message: str) -> None:
        raise _worker_only_error()(message)

    def raise_zenoh_error(self, message: str) -> None:
        """zenoh's own error escaping a hosted method, as from a HERO whose session closed under it."""
        import zenoh  # in the worker only: this module imports nothing of zenoh

        raise zenoh.ZError(message)

    def zenoh_error_as_value(self) -> dict[str, Any]:
        import zenoh  # in the worker only

        return {"problem": zenoh.ZError("session closed")}

    def mentions_zenoh(self) -> dict[str, Any]:
        """A result that names zenoh only as text, beside an object that counts its unpicklings."""
        marker = CountsUnpickling()
        marker.note = "made in the worker"
        return {"encoding": "zenoh/bytes", "marker": marker}

    def unpicklings_here(self) -> int:
        return CountsUnpickling.unpickled

    def worker_function(self) -> Any:
        """A function of the worker's own code: pickled by reference, it would import the worker's module."""
        from boss_sidecar.worker.convert import qos  # in the worker only

        return qos

    def peek_secret(self) -> str:
        return self._secret

    def break_channel(self) -> None:
        """Shut the worker's channel down (the host sees it end) while this worker lives on a moment."""
        fd = int(sys.argv[sys.argv.index("--fd") + 1])
        with socket.socket(fileno=os.dup(fd)) as channel:
            channel.shutdown(socket.SHUT_RDWR)
        threading.Event().wait(0.5)  # still alive while the host notices: the race window, held open

    def sigterm_this_thread(self) -> str:
        """SIGTERM delivered to the thread running this call, never the main one: as the kernel may
        hand a process's SIGTERM to any of its threads. Returns that thread's name."""
        here = threading.current_thread()
        if here is threading.main_thread():
            raise RuntimeError("a call ran on the worker's main thread")
        signal.pthread_kill(here.ident or 0, signal.SIGTERM)
        return here.name

    def call_host(self, ref: Any, method: str) -> Any:
        """Ask the host to run ``method`` of the exported object behind ``ref``, by the raw request."""
        return ref._endpoint.request("call_exported", (ref._ref.ref_id, method, (), {}))

    def ask_host(self, ref: Any, method: str) -> Any:
        """Send the host a raw request for ``method`` of its own services (through ``ref``'s channel)."""
        return ref._endpoint.request(method)


class RaisesInInit:
    """A class that refuses to be built."""

    def __init__(self, reason: str) -> None:
        raise ValueError(f"refusing to start: {reason}")


class AsksBeforeStarting:
    """Asks an exported host object ``gate`` whether to block in ``__init__`` (to hold a replay)."""

    def __init__(self, gate: Any) -> None:
        if gate.should_block(os.getpid()):
            threading.Event().wait(FOREVER)

    def ready(self) -> bool:
        return True


class HangsWhileMarked:
    """Its ``__init__`` blocks "forever" while the file ``marker`` exists: a replay that hangs."""

    def __init__(self, marker: str) -> None:
        while os.path.exists(marker):
            threading.Event().wait(0.05)  # the worker is killed long before FOREVER
        self.marker = marker

    def echo(self, value: Any) -> Any:
        return value
