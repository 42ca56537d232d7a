"""The wire format: BOSS's five message dicts plus our extension types.

Every message is a dict with ``id`` and ``type`` and every field of its type (a BOSS receiver
raises ``KeyError`` on a missing one). BOSS ignores types it does not know and extra fields on
known ones, so our extensions (hello, heartbeat, events, stop, the ``ack`` flag on sets and the
``traceback`` text on errors) are safe to send to a BOSS peer.

Each type's code, its class and its field checks stand side by side in ``_SPECS``.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from boss_sidecar.errors import ProtocolError

PROTOCOL_VERSION = 1


class MessageType(StrEnum):
    """Wire codes. The one-letter ones are BOSS's; the words are ours."""

    CALL = "c"
    GET = "g"
    SET = "s"
    RESULT = "r"
    ERROR = "e"
    HELLO = "hello"
    PING = "ping"
    PONG = "pong"
    EVENT = "event"
    STOP = "stop"


_ids = itertools.count(secrets.randbits(62))


def new_id() -> int:
    """A message id unique for this process; random start so stray ids rarely collide."""
    return next(_ids)


@dataclass(slots=True)
class Message:
    """Base of all messages; subclasses list their wire fields in ``fields``."""

    TYPE: ClassVar[MessageType]
    fields: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[dict[str, Any]] = {}

    id: int

    def to_wire(self) -> dict[str, Any]:
        """The dict that travels: id, type, then every field of the type."""
        wire: dict[str, Any] = {"id": self.id, "type": self.TYPE._value_}
        for name in self.fields:
            wire[name] = getattr(self, name)
        for name in self.optional:
            wire[name] = getattr(self, name)
        return wire


@dataclass(slots=True)
class Call(Message):
    """Call a public method of the peer's served object; answered by Result or Error."""

    TYPE = MessageType.CALL
    fields = ("method", "args", "kwargs")
    optional: ClassVar[dict[str, Any]] = {"timeout": None}
    method: str = ""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    """How long the caller waits; the server reports calls running far past it as hung."""


@dataclass(slots=True)
class GetAttribute(Message):
    """Read an attribute of the peer's served object; answered by Result or Error."""

    TYPE = MessageType.GET
    fields = ("name",)
    name: str = ""


@dataclass(slots=True)
class SetAttribute(Message):
    """Write an attribute. BOSS sends no reply; with ``ack`` set, ours answers Result or Error."""

    TYPE = MessageType.SET
    fields = ("name", "value")
    optional: ClassVar[dict[str, Any]] = {"ack": False}
    name: str = ""
    value: Any = None
    ack: bool = False


@dataclass(slots=True)
class Result(Message):
    """The result of the request with the same id."""

    TYPE = MessageType.RESULT
    fields = ("payload",)
    payload: Any = None


@dataclass(slots=True)
class Error(Message):
    """The exception of the request with the same id, with the remote traceback as text."""

    TYPE = MessageType.ERROR
    fields = ("error",)
    optional: ClassVar[dict[str, Any]] = {"traceback": ""}
    error: BaseException = field(default_factory=Exception)
    traceback: str = ""


@dataclass(slots=True)
class Hello(Message):
    """Sent once by each of our endpoints when it starts; tells the peer our version and pid."""

    TYPE = MessageType.HELLO
    fields = ("version", "pid", "name")
    version: int = PROTOCOL_VERSION
    pid: int = 0
    name: str = ""


@dataclass(slots=True)
class Ping(Message):
    """Heartbeat request; answered at once by a Pong with the same id, on the I/O thread."""

    TYPE = MessageType.PING
    fields = ("sent",)
    sent: float = 0.0


@dataclass(slots=True)
class Pong(Message):
    """Heartbeat answer; echoes the ping's ``sent`` so the pinger measures the round trip."""

    TYPE = MessageType.PONG
    fields = ("sent",)
    optional: ClassVar[dict[str, Any]] = {"overdue": []}
    sent: float = 0.0
    overdue: list[str] = field(default_factory=list)
    """Served calls still running long after their caller gave up: a sign of a hung worker."""


@dataclass(slots=True)
class Event(Message):
    """A one-way call: no reply, run in arrival order."""

    TYPE = MessageType.EVENT
    fields = ("method", "args", "kwargs")
    method: str = ""
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Stop(Message):
    """Ask the peer to release what it holds and exit; answered by Result once it is done."""

    TYPE = MessageType.STOP
    fields = ("reason",)
    reason: str = ""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_args(value: object) -> bool:
    return isinstance(value, tuple | list)


def _is_kwargs(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(key, str) for key in value)


def _is_exception(value: object) -> bool:
    return isinstance(value, BaseException)


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _anything(value: object) -> bool:
    return True


_Check = tuple[Callable[[object], bool], str]

_INT: _Check = (_is_int, "an int")
_STR: _Check = (_is_str, "a str")
_ARGS: _Check = (_is_args, "a tuple or list")
_KWARGS: _Check = (_is_kwargs, "a dict with str keys")
_ANY: _Check = (_anything, "anything")
_NUMBER: _Check = (_is_number, "a number")

# code -> (class, {field: check}, {optional field: check})
_SPECS: dict[str, tuple[type[Message], dict[str, _Check], dict[str, _Check]]] = {
    MessageType.CALL: (
        Call,
        {"method": _STR, "args": _ARGS, "kwargs": _KWARGS},
        {"timeout": ((lambda v: v is None or _is_number(v)), "a number or None")},
    ),
    MessageType.GET: (GetAttribute, {"name": _STR}, {}),
    MessageType.SET: (SetAttribute, {"name": _STR, "value": _ANY}, {"ack": (_is_bool, "a bool")}),
    MessageType.RESULT: (Result, {"payload": _ANY}, {}),
    MessageType.ERROR: (Error, {"error": (_is_exception, "an exception")}, {"traceback": _STR}),
    MessageType.HELLO: (Hello, {"version": _INT, "pid": _INT, "name": _STR}, {}),
    MessageType.PING: (Ping, {"sent": _NUMBER}, {}),
    MessageType.PONG: (Pong, {"sent": _NUMBER}, {"overdue": ((lambda v: isinstance(v, list)), "a list")}),
    MessageType.EVENT: (Event, {"method": _STR, "args": _ARGS, "kwargs": _KWARGS}, {}),
    MessageType.STOP: (Stop, {"reason": _STR}, {}),
}

REQUEST_TYPES = frozenset({MessageType.CALL, MessageType.GET, MessageType.SET, MessageType.STOP})


class UnknownMessageType(ProtocolError):
    """A well-formed dict of a type we do not know; receivers ignore it (BOSS does too)."""


_Field = tuple[str, Callable[[object], bool] | None, str]  # name, check (None: anything goes), expectation

# _SPECS flattened for decode, which runs for every message received: checks that accept anything drop out.
_DECODERS: dict[str, tuple[type[Message], tuple[_Field, ...], tuple[_Field, ...]]] = {
    code: (
        cls,
        tuple((name, None if check is _anything else check, expected) for name, (check, expected) in required.items()),
        tuple((name, None if check is _anything else check, expected) for name, (check, expected) in optional.items()),
    )
    for code, (cls, required, optional) in _SPECS.items()
}
_ABSENT = object()


def decode(raw: object) -> Message:
    """Check a received dict and build its message; raise ProtocolError naming the problem."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"message must be a dict, got {type(raw).__name__}")
    code = raw.get("type", _ABSENT)
    if not isinstance(code, str):
        if code is _ABSENT:
            raise ProtocolError("message has no 'type' field")
        raise ProtocolError(f"message field 'type' must be a str, got {type(code).__name__}")
    spec = _DECODERS.get(code)
    if spec is None:
        raise UnknownMessageType(f"unknown message type {code!r}")
    cls, required, optional = spec
    message_id = raw.get("id", _ABSENT)
    if type(message_id) is not int and not _is_int(message_id):
        if message_id is _ABSENT:
            raise ProtocolError(f"{cls.__name__} message ({code!r}) has no 'id' field")
        raise _wrong_field(cls, code, "id", message_id, "an int")
    values: dict[str, Any] = {"id": message_id}
    _take(cls, code, raw, required, values, missing_is_error=True)
    _take(cls, code, raw, optional, values, missing_is_error=False)
    if "args" in values and type(values["args"]) is not tuple:
        values["args"] = tuple(values["args"])
    return cls(**values)


def _take(
    cls: type[Message],
    code: str,
    raw: dict[Any, Any],
    fields: tuple[_Field, ...],
    values: dict[str, Any],
    *,
    missing_is_error: bool,
) -> None:
    """Check ``fields`` of ``raw`` and copy them into ``values``."""
    for name, check, expected in fields:
        value = raw.get(name, _ABSENT)
        if value is _ABSENT:
            if missing_is_error:
                raise ProtocolError(f"{cls.__name__} message ({code!r}) has no {name!r} field")
            continue
        if check is not None and not check(value):
            raise _wrong_field(cls, code, name, value, expected)
        values[name] = value


def _wrong_field(cls: type[Message], code: str, name: str, value: object, expected: str) -> ProtocolError:
    return ProtocolError(
        f"{cls.__name__} message ({code!r}) field {name!r} must be {expected}, got {type(value).__name__}"
    )


def id_of(raw: object) -> int | None:
    """The id of a raw message if it has a usable one, so a malformed request can be answered."""
    if isinstance(raw, dict):
        value = raw.get("id")
        if _is_int(value):
            return int(value)  # type: ignore[arg-type]  # _is_int checked it
    return None
