"""A peer program for the real-process tests: serves ``EchoPeer`` over an inherited channel.

Run as ``python echo_peer.py FD [--max-bytes N]``; FD is one end of a ``multiprocessing.Pipe``
passed with ``pass_fds``. It exits when the parent closes the channel.
"""

from __future__ import annotations

import argparse
import threading
from multiprocessing.connection import Connection
from typing import Any

from boss_sidecar.rpc import DEFAULT_MAX_MESSAGE_BYTES, Endpoint

_BOUND = 60.0  # no wait in here is longer than this


class Stubborn(Exception):
    """Pickles, but cannot be rebuilt from its pickle (its __init__ wants two arguments)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code}: {text}")


class ChildOnly(Exception):
    """Lives in this program's ``__main__``: the parent has no such class to unpickle it into."""


class EchoPeer:
    """What the child serves to the parent."""

    def __init__(self) -> None:
        self.value = 1
        self._secret = "hidden"
        self._gate = threading.Event()
        self._records: list[Any] = []
        self.endpoint: Endpoint | None = None

    def echo(self, value: Any = None) -> Any:
        return value

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def make(self, size: int) -> bytes:
        return b"x" * size

    def call_back(self, method: str, *args: Any) -> Any:
        """Call the parent's object while the parent waits for this very call."""
        assert self.endpoint is not None
        return self.endpoint.call(method, *args, timeout=_BOUND)

    def block(self, limit: float = _BOUND) -> bool:
        """Tell the parent we are in (event ``blocked``), then wait for ``release``; True if released."""
        assert self.endpoint is not None
        self.endpoint.notify("blocked")
        released = self._gate.wait(limit)
        self._gate.clear()
        return released

    def wait_for_release(self, limit: float = _BOUND) -> bool:
        """Wait for ``release`` without a word to the parent meanwhile; True if released."""
        released = self._gate.wait(limit)
        self._gate.clear()
        return released

    def release(self) -> None:
        self._gate.set()

    def raise_builtin(self, message: str) -> None:
        raise ValueError(message)

    def raise_stubborn(self, code: int, text: str) -> None:
        raise Stubborn(code, text)

    def raise_child_only(self, message: str) -> None:
        raise ChildOnly(message)

    def unpicklable_result(self) -> Any:
        return threading.Lock()

    def notify_then_return(self, count: int) -> int:
        """Send the parent ``count`` events (``seen``), then answer: the reply comes after all of them."""
        assert self.endpoint is not None
        for index in range(count):
            self.endpoint.notify("seen", index)
        return count

    def record(self, item: Any) -> None:
        self._records.append(item)

    def recorded(self) -> list[Any]:
        return list(self._records)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("fd", type=int)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    options = parser.parse_args()
    peer = EchoPeer()
    endpoint = Endpoint(
        Connection(options.fd), peer, name="echo-peer", max_message_bytes=options.max_bytes, start=False
    )
    peer.endpoint = endpoint  # before the hello goes out: the parent may call back at once
    endpoint.start()
    endpoint.closed.wait(600)  # the parent closing or dying ends it sooner


if __name__ == "__main__":
    main()
