"""Pickling what the RPC endpoint sends: one protocol, and what to do when something will not pickle.

Kept apart from ``rpc``: an exception that would not survive the trip travels as a RemoteError
with its text, and a message that does not pickle is named by its first part that does not.
Nothing sent may make its reader import zenoh (or the worker's modules, which import it): a host
never does (DESIGN.md), and unpickling a reference to a class imports its module.
"""

from __future__ import annotations

import io
import pickle
import traceback
from typing import Any

from boss_sidecar._pending import _describe
from boss_sidecar._salvage import _StandIn, _StandInUnpickler
from boss_sidecar.errors import EncodeError, MessageTooLarge, RemoteError, ZenohError
from boss_sidecar.protocol import Call, Error, Event, Message, Result, SetAttribute

HOST_NEVER_IMPORTS = ("zenoh", "boss_sidecar.worker")
"""Packages a host never imports; a pickle that refers to them is refused or replaced by its text."""
_NEVER_IMPORTED_MARKS = tuple(package.encode() for package in HOST_NEVER_IMPORTS)


def _refuse_never_imported(module: str, name: str) -> None:
    """UnpicklingError if ``module`` is one a host never imports."""
    if any(module == package or module.startswith(package + ".") for package in HOST_NEVER_IMPORTS):
        raise pickle.UnpicklingError(f"{module}.{name} would import {module} in a host that never imports it")


class _AsTheHostWould(pickle.Unpickler):
    """Unpickles as a host would, refusing a reference that would import what a host never imports."""

    def find_class(self, module: str, name: str) -> Any:
        _refuse_never_imported(module, name)
        return super().find_class(module, name)


class _ReferenceScan(_StandInUnpickler):
    """Reads a pickle only for the modules it refers to: what it names becomes a stand-in, never run."""

    def find_class(self, module: str, name: str) -> type[_StandIn]:
        _refuse_never_imported(module, name)
        return super().find_class(module, name)


def _refers_to_never_imported(data: bytes) -> str | None:
    """What in ``data`` a host could not unpickle without importing zenoh, if anything.

    A quick look for the packages' names first: the scan only when one appears."""
    for mark in _NEVER_IMPORTED_MARKS:
        if mark in data:
            break
    else:
        return None
    try:
        _ReferenceScan(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        return str(exc)
    except Exception:
        return None  # another failure is not this check's concern: it only looks for references
    return None


def _dumps(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


class _Parts:
    """A pickler's file that keeps the pieces it is given."""

    __slots__ = ("write",)

    def __init__(self, parts: list[Any]) -> None:
        self.write = parts.append


def _dump_parts(obj: object) -> list[bytes]:
    """``obj`` pickled (the same bytes as ``_dumps``), as the pieces the pickler wrote.

    The pickler hands any bytes object of 64 KiB or more straight to its file, so a large payload
    is one of the pieces, uncopied: it is copied once, into the socket, not first into a pickle.
    Mutable pieces (a bytearray) are copied, as the message may be written after the caller moved on."""
    parts: list[Any] = []
    pickle.Pickler(_Parts(parts), protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return [part if type(part) is bytes else bytes(part) for part in parts]


def _encode(message: Message, name: str, limit: int) -> tuple[list[bytes], int]:
    """The message pickled, as the parts to write, and its size; EncodeError or MessageTooLarge (over
    ``limit`` bytes) naming what was wrong, ``name`` the endpoint's.

    Events (samples, put batches, query replies: the bulk traffic) are pickled in parts, their
    large payloads uncopied (see _dump_parts); other messages in one piece, which is quicker
    for the small ones requests and replies mostly are."""
    try:
        wire = message.to_wire()
        parts = _dump_parts(wire) if type(message) is Event else [_dumps(wire)]
    except Exception as exc:
        what = _describe(message)
        raise EncodeError(f"{name}: {what}: {_which_unpicklable(message)} cannot be pickled: {exc}") from exc
    if type(message) is Result and (refused := _refers_to_never_imported(parts[0])) is not None:
        raise EncodeError(f"{name}: {_describe(message)}: the result cannot travel: {refused}")
    size = sum(map(len, parts)) if len(parts) > 1 else len(parts[0])
    if size > limit:
        raise MessageTooLarge(
            f"{name}: {_describe(message)}: message of {size} bytes exceeds the limit of {limit} bytes"
        )
    return parts, size


def _travels(exc: BaseException) -> bool:
    """Whether an exception survives a pickle round trip (many custom ones do not) in a host."""
    try:
        _AsTheHostWould(io.BytesIO(_dumps(exc))).load()
    except Exception:
        return False
    return True


def portable_error(exc: BaseException) -> BaseException:
    """The exception itself if it can travel, else one that carries its text: ZenohError for zenoh's
    own errors (as the worker's operations raise them), RemoteError for the rest."""
    if _travels(exc):
        return exc
    kind = type(exc)
    if kind.__module__ == "zenoh":
        return ZenohError(f"{kind.__qualname__}: {exc}")
    return RemoteError(f"{kind.__module__}.{kind.__qualname__}", str(exc), "".join(traceback.format_exception(exc)))


def _which_unpicklable(message: Message) -> str:
    """Name the first part of a message that does not pickle, for a clear error."""
    parts: list[tuple[str, object]] = []
    if isinstance(message, Call | Event):
        parts = [(f"argument {index}", value) for index, value in enumerate(message.args)]
        parts += [(f"keyword argument {key!r}", value) for key, value in message.kwargs.items()]
    elif isinstance(message, SetAttribute):
        parts = [(f"value for {message.name!r}", message.value)]
    elif isinstance(message, Result):
        parts = [("result", message.payload)]
    elif isinstance(message, Error):
        parts = [("error", message.error)]
    for label, value in parts:
        try:
            _dumps(value)
        except Exception:
            return f"{label} ({type(value).__name__})"
    return "the message"
