"""Classes the sidecar tests host in a worker (importable there because the worker gets our sys.path)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

_BOUND = 60.0  # a blocked method gives up after this, should nobody kill its worker


class Counter:
    """A small stateful object: a method, a plain attribute, a class attribute and the name BOSS passes."""

    label = "counter"

    def __init__(self, start: int = 0, name: str = "anonymous") -> None:
        self.value = start
        self.name = name

    def increment(self, by: int = 1) -> int:
        self.value += by
        return self.value

    def worker_pid(self) -> int:
        return os.getpid()

    def zenoh_loaded(self) -> bool:
        return "zenoh" in sys.modules


class Caller:
    """Calls back into a host object it got by reference (``sidecar.expose(obj)``)."""

    def __init__(self, host: Any) -> None:
        self.host = host

    def ask(self, value: int) -> int:
        return int(self.host.double(value)) + 1


class Blocker:
    """A method that blocks the worker until it is killed, and one that ends the worker."""

    def block(self, host: Any) -> None:
        host.entered()
        threading.Event().wait(_BOUND)

    def exit(self, code: int) -> None:
        sys.stdout.flush()
        os._exit(code)


class Introspect:
    """Facts about the worker it lives in."""

    def thread_names(self) -> list[str]:
        return sorted(thread.name for thread in threading.enumerate())


class Instrument:
    """Method names a proxy could have wanted for itself, as instruments have them; a method that
    logs through the logging module (as vendor code does) and a teardown that fails (a worker warning)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.mode = "idle"

    def close(self) -> str:
        self.calls.append("close")
        return "instrument closed"

    def stop(self) -> str:
        self.calls.append("stop")
        return "instrument stopped"

    def reset(self) -> str:
        self.calls.append("reset")
        return "instrument reset"

    def drop(self) -> str:
        self.calls.append("drop")
        return "instrument dropped"

    def set_attribute(self, name: str, value: Any) -> str:
        self.calls.append(f"set_attribute {name}={value}")
        return "instrument set_attribute"

    def history(self) -> list[str]:
        return list(self.calls)

    def chatter(self, text: str) -> int:
        logging.getLogger("vendor.driver").warning("vendor says %s", text)
        return os.getpid()

    def _teardown(self) -> None:
        raise RuntimeError("teardown refused")


class Census:
    """Counts its instances alive in this worker: what a user would ask to see what is hosted."""

    alive = 0

    def __init__(self) -> None:
        Census.alive += 1

    def count(self) -> int:
        return Census.alive

    def _teardown(self) -> None:
        Census.alive -= 1
