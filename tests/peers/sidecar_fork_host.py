"""A host that forks while its sidecar runs: the child starts and uses its own sidecar; the parent's
sidecar keeps working (same worker) and refuses use from the child.

Run as ``python sidecar_fork_host.py``; prints ``ok <json>`` and exits 0, or fails an assertion.
"""

from __future__ import annotations

import os
import sys
import threading

from sidecar_support import logs_to_stderr, reply

from boss_sidecar.errors import SidecarUnavailable
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import peer_config


def child_main(parent: Sidecar) -> int:
    """In the child: the parent's sidecar is not ours to use (and says so); our own works."""
    if parent.state != "stopped" or parent.pid is not None or "forked child" not in parent.health().reason:
        return 4
    for use in (lambda: parent.info(timeout=5), lambda: parent.put("fork/parent", "from the child")):
        try:
            use()
        except SidecarUnavailable:
            continue
        return 2
    own = Sidecar("fork-child", peer_config()).start()
    own.queryable("fork/child", lambda query: f"child {os.getpid()}")
    answers = [r.text() for r in own.get("fork/child")]
    own.stop()
    return 0 if answers == [f"child {os.getpid()}"] else 3


def main() -> None:
    logs_to_stderr()
    parent = Sidecar("fork-parent", peer_config()).start()
    parent.queryable("fork/parent", lambda query: "parent")
    assert [r.text() for r in parent.get("fork/parent")] == ["parent"]
    worker = parent.pid
    standbys = _standby_threads()
    child = os.fork()
    if child == 0:
        code = child_main(parent)
        sys.stdout.flush()
        sys.exit(code)  # a normal exit: the child's atexit hook must leave the parent's worker alone
    _, status = os.waitpid(child, 0)
    answers = [r.text() for r in parent.get("fork/parent")]
    same_worker = parent.pid == worker
    standbys_kept = bool(standbys) and _standby_threads() == standbys  # the child let go without ending ours
    parent.stop()
    reply(
        "ok",
        {
            "child_exit": os.waitstatus_to_exitcode(status),
            "answers": answers,
            "same_worker": same_worker,
            "standbys_kept": standbys_kept,
        },
    )


def _standby_threads() -> list[str]:
    return sorted(thread.name for thread in threading.enumerate() if thread.name.endswith("-standby"))


if __name__ == "__main__":
    main()
