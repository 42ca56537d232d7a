"""Reading what can be read out of a pickle the RPC endpoint cannot load, so its call is not lost.

Kept apart from ``rpc``: a reply or request that does not unpickle here (an exception class we
cannot import, a message over the size limit) still names its id, its type and, for an error,
the remote type, text and traceback; nothing it names is imported or run.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from typing import Any, ClassVar


class _StandIn:
    """Stands for an object of a class this process does not rebuild; keeps its name and arguments."""

    qualified: ClassVar[str] = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def text(self) -> str:
        """What ``str()`` of the exception it stands for would say."""
        if len(self.args) == 1:
            return str(self.args[0])
        return str(self.args) if self.args else ""


class _StandInUnpickler(pickle.Unpickler):
    """Loads the structure of a pickle without importing or running anything it names."""

    def find_class(self, module: str, name: str) -> type[_StandIn]:
        return type(name, (_StandIn,), {"qualified": f"{module}.{name}"})


def _load_structure(data: bytes) -> object:
    """The message with every object of a named class replaced by a _StandIn; None if not a pickle."""
    try:
        return _StandInUnpickler(io.BytesIO(data)).load()
    except Exception:
        return None


def _salvage(data: bytes) -> dict[str, Any]:
    """Read ids, type and traceback out of the start of a pickle, so its call is not lost."""
    found: dict[str, Any] = {}
    key: object = None
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            if opcode.name in {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"}:
                continue
            if key == "id" and isinstance(arg, int) and not isinstance(arg, bool):
                found.setdefault("ids", []).append(arg)
            elif key in ("type", "traceback") and isinstance(arg, str):
                found.setdefault(key, arg)
            key = arg if isinstance(arg, str) else None
    except Exception:  # garbage or a cut-off pickle stops the scan; what was found so far still helps
        pass
    return found
