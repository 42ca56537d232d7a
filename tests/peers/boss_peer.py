"""A real BOSS peer for the compatibility tests: heros-boss's own ``MultiprocessRPC``.

Run as ``python boss_peer.py FD``; FD is one end of a ``multiprocessing.Pipe`` passed with
``pass_fds``. Like ``boss/worker.py`` it builds a fresh asyncio loop and runs it until its
communication task ends (its ``stop`` method calls ``_rpc_stop``). It polls the pipe every 10 ms,
reads every field of a message by key, and raises any error reply inside its receive loop.
"""

from __future__ import annotations

import asyncio
import sys
from multiprocessing.connection import Connection
from typing import Any

from boss.multiprocess import MultiprocessRPC


class BossPeer(MultiprocessRPC):
    """What the BOSS side serves; each ``ask``/``fetch``/``push`` drives one BOSS feature at our side."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pipe: Connection) -> None:
        self.value = 1
        super().__init__(loop, pipe)

    def add(self, a: Any, b: Any) -> Any:
        return a + b

    def ask(self, method: str, *args: Any) -> None:
        """BOSS ``_rpc`` with ``_cb``: call our side's ``method``; report the result with ``report``."""
        self._rpc(method, *args, _cb=lambda result: self._rpc("report", method, result))

    def fetch(self, name: str, local_name: str) -> None:
        """BOSS ``_get_attribute``: read our side's ``name`` into ``self.<local_name>``, then report it.

        Replies are handled in order, so the answer to the ``echo`` sent after the read comes after
        the read's answer (if any): its callback reports what the read stored, or ``<none>``.
        """
        self._get_attribute(name, local_name)
        self._rpc("echo", None, _cb=lambda _: self._rpc("report", local_name, getattr(self, local_name, "<none>")))

    def push(self, name: str, value: Any) -> None:
        """BOSS ``_set_attribute``: write our side's attribute (one-way)."""
        self._set_attribute(name, value)

    def stop(self) -> None:
        self._rpc_stop()


def main() -> None:
    loop = asyncio.new_event_loop()
    peer = BossPeer(loop, Connection(int(sys.argv[1])))
    loop.run_until_complete(peer._communicatation_task)


if __name__ == "__main__":
    main()
