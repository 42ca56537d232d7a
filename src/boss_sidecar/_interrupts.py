"""Where an interrupt can land: Python runs signal handlers (Ctrl-C's KeyboardInterrupt) in the main thread only.

So only code on the main thread must bear being cut short at any call's return; a read or write elsewhere (the
worker's readers, the standby, writer threads) skips the care that costs (see _framing._fill, _writer._write).
"""

from __future__ import annotations

import os
import threading

MAIN = [threading.main_thread().ident]
"""The main thread's ident, in a list so a forked child can set its own (the thread that forked is its main)."""


def _after_fork_in_child() -> None:
    MAIN[0] = threading.get_ident()


os.register_at_fork(after_in_child=_after_fork_in_child)
