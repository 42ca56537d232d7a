"""The wire format: every message type encodes to a full dict, decodes back, and bad dicts are named."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from boss_sidecar.errors import ProtocolError
from boss_sidecar.protocol import (
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    Call,
    Error,
    Event,
    GetAttribute,
    Hello,
    Message,
    MessageType,
    Ping,
    Pong,
    Result,
    SetAttribute,
    Stop,
    UnknownMessageType,
    decode,
    id_of,
    new_id,
)

# One message of every type, with every field set to something other than its default.
SAMPLES: list[Message] = [
    Call(id=1, method="add", args=(1, 2), kwargs={"scale": 3}, timeout=2.5),
    GetAttribute(id=2, name="value"),
    SetAttribute(id=3, name="value", value=[1, 2], ack=True),
    Result(id=4, payload={"answer": 42}),
    Error(id=5, error=ValueError("boom"), traceback="Traceback ...\nValueError: boom\n"),
    Hello(id=6, version=PROTOCOL_VERSION, pid=1234, name="worker"),
    Ping(id=7, sent=12.5),
    Pong(id=8, sent=12.5, overdue=["call 'slow' running 9.0s, past its 1s timeout"]),
    Event(id=9, method="record", args=("a",), kwargs={"level": 1}),
    Stop(id=10, reason="shutting down"),
]

# What BOSS's own message classes read from each of its types (boss/multiprocess.py).
BOSS_FIELDS = {
    "c": {"id", "type", "method", "args", "kwargs"},
    "g": {"id", "type", "name"},
    "s": {"id", "type", "name", "value"},
    "r": {"id", "type", "payload"},
    "e": {"id", "type", "error"},
}


def _ids(message: Message) -> str:
    return type(message).__name__


def _equal(left: Message, right: Message) -> bool:
    """Messages compare by fields; exceptions compare by type and args."""
    if isinstance(left, Error) and isinstance(right, Error):
        return (
            left.id == right.id
            and type(left.error) is type(right.error)
            and left.error.args == right.error.args
            and left.traceback == right.traceback
        )
    return left == right


def test_every_message_type_has_a_sample() -> None:
    """The samples below cover every wire code, so the tests cover every type."""
    assert {str(sample.TYPE) for sample in SAMPLES} == {str(code) for code in MessageType}


@pytest.mark.parametrize("message", SAMPLES, ids=_ids)
def test_encode_gives_a_plain_dict_with_id_type_and_every_field(message: Message) -> None:
    """The wire dict carries id, the type code as a plain str, and every required and optional field."""
    wire = message.to_wire()
    assert type(wire) is dict
    assert wire["id"] == message.id
    assert wire["type"] == str(message.TYPE)
    assert type(wire["type"]) is str
    assert set(wire) == {"id", "type", *message.fields, *message.optional}
    for name in (*message.fields, *message.optional):
        assert wire[name] == getattr(message, name) or isinstance(wire[name], BaseException)


@pytest.mark.parametrize("message", SAMPLES, ids=_ids)
def test_round_trip_through_pickle_gives_the_same_message(message: Message) -> None:
    """to_wire, pickle, unpickle, decode is the identity."""
    back = decode(pickle.loads(pickle.dumps(message.to_wire())))
    assert type(back) is type(message)
    assert _equal(back, message)


@pytest.mark.parametrize("message", [m for m in SAMPLES if str(m.TYPE) in BOSS_FIELDS], ids=_ids)
def test_boss_types_carry_every_field_boss_reads(message: Message) -> None:
    """A BOSS receiver raises KeyError on a missing field, so each of its types carries them all."""
    assert BOSS_FIELDS[str(message.TYPE)] <= set(message.to_wire())


@pytest.mark.parametrize("message", SAMPLES, ids=_ids)
def test_defaults_encode_and_decode(message: Message) -> None:
    """A message built with only an id still round-trips (defaults are valid wire values)."""
    bare = type(message)(id=99)
    assert _equal(decode(bare.to_wire()), bare)


def test_decode_accepts_a_boss_message_without_our_optional_fields() -> None:
    """BOSS sends no ``timeout``, ``ack`` or ``traceback``: decoding fills in the defaults."""
    call = decode({"id": 1, "type": "c", "method": "m", "args": [1], "kwargs": {}})
    assert call == Call(id=1, method="m", args=(1,), kwargs={}, timeout=None)
    assert decode({"id": 2, "type": "s", "name": "x", "value": 3}) == SetAttribute(id=2, name="x", value=3, ack=False)
    error = decode({"id": 3, "type": "e", "error": KeyError("k")})
    assert isinstance(error, Error)
    assert error.traceback == ""


def test_decode_ignores_extra_fields() -> None:
    """Fields a type does not know are ignored, as BOSS does."""
    assert decode({"id": 1, "type": "g", "name": "x", "extra": object()}) == GetAttribute(id=1, name="x")


def test_decode_turns_a_list_of_args_into_a_tuple() -> None:
    """Args may arrive as a list (another sender's choice) and are handed on as a tuple."""
    message = decode({"id": 1, "type": "event", "method": "m", "args": [1, 2], "kwargs": {}})
    assert isinstance(message, Event)
    assert message.args == (1, 2)


@pytest.mark.parametrize("raw", [None, 3, "c", [("id", 1)], b"\x80", ("id", "type")])
def test_decode_refuses_a_non_dict_naming_its_type(raw: object) -> None:
    """Anything but a dict is refused, and the error names what arrived."""
    with pytest.raises(ProtocolError, match=f"must be a dict, got {type(raw).__name__}"):
        decode(raw)


def test_decode_refuses_a_dict_without_type() -> None:
    """The type field is required."""
    with pytest.raises(ProtocolError, match="no 'type' field"):
        decode({"id": 1})


def test_decode_refuses_a_type_that_is_not_a_str() -> None:
    """The type field must be a str; the error names the type that came."""
    with pytest.raises(ProtocolError, match="'type' must be a str, got int"):
        decode({"id": 1, "type": 7})


def test_decode_raises_unknown_message_type_for_a_new_code() -> None:
    """An unknown code raises UnknownMessageType, a ProtocolError receivers can choose to ignore."""
    with pytest.raises(UnknownMessageType, match="unknown message type 'batch'") as caught:
        decode({"id": 1, "type": "batch"})
    assert isinstance(caught.value, ProtocolError)


@pytest.mark.parametrize("message", SAMPLES, ids=_ids)
def test_decode_refuses_a_missing_id(message: Message) -> None:
    """Every type needs an id; the error names the type and the field."""
    wire = message.to_wire()
    del wire["id"]
    with pytest.raises(ProtocolError, match=rf"{type(message).__name__} message .* no 'id' field"):
        decode(wire)


@pytest.mark.parametrize("bad_id", ["1", 1.0, True, None])
def test_decode_refuses_an_id_that_is_not_an_int(bad_id: object) -> None:
    """Ids are ints (BOSS uses int(uuid4())); a bool is not accepted as one."""
    with pytest.raises(ProtocolError, match=f"'id' must be an int, got {type(bad_id).__name__}"):
        decode({"id": bad_id, "type": "r", "payload": None})


def _required_fields() -> list[tuple[Message, str]]:
    return [(message, name) for message in SAMPLES for name in message.fields]


@pytest.mark.parametrize(("message", "name"), _required_fields(), ids=lambda v: v if isinstance(v, str) else _ids(v))
def test_decode_refuses_a_missing_required_field(message: Message, name: str) -> None:
    """Each required field is checked; the error names the message type and the missing field."""
    wire = message.to_wire()
    del wire[name]
    with pytest.raises(ProtocolError, match=rf"{type(message).__name__} message \('{message.TYPE}'\) has no '{name}'"):
        decode(wire)


# (type, field, a wrong value, the type name the error reports)
WRONG_TYPES: list[tuple[Message, str, object]] = [
    (Call(id=1, method="m"), "method", 3),
    (Call(id=1, method="m"), "args", "ab"),
    (Call(id=1, method="m"), "kwargs", {1: "x"}),
    (Call(id=1, method="m"), "kwargs", [("a", 1)]),
    (Call(id=1, method="m"), "timeout", "soon"),
    (GetAttribute(id=1, name="x"), "name", b"x"),
    (SetAttribute(id=1, name="x"), "name", None),
    (SetAttribute(id=1, name="x"), "ack", 1),
    (Error(id=1, error=ValueError()), "error", "not an exception"),
    (Error(id=1, error=ValueError()), "traceback", ["lines"]),
    (Hello(id=1), "version", "1"),
    (Hello(id=1), "pid", 1.5),
    (Hello(id=1), "name", 0),
    (Ping(id=1), "sent", "now"),
    (Ping(id=1), "sent", True),
    (Pong(id=1), "sent", None),
    (Pong(id=1), "overdue", "call"),
    (Event(id=1, method="m"), "method", None),
    (Event(id=1, method="m"), "args", 5),
    (Stop(id=1), "reason", 0),
]


@pytest.mark.parametrize(
    ("message", "name", "value"),
    WRONG_TYPES,
    ids=[f"{_ids(m)}-{n}-{type(v).__name__}" for m, n, v in WRONG_TYPES],
)
def test_decode_refuses_a_field_of_the_wrong_type(message: Message, name: str, value: object) -> None:
    """A field of the wrong type is refused; the error names the message, the field and what came."""
    wire = message.to_wire()
    wire[name] = value
    with pytest.raises(ProtocolError, match=rf"{type(message).__name__} .* field '{name}' must be .* got "):
        decode(wire)


def test_new_id_gives_distinct_ints() -> None:
    """Ids from one process never repeat."""
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(type(value) is int for value in ids)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [({"id": 5, "type": "zz"}, 5), ({"id": True}, None), ({"id": "5"}, None), ({}, None), ([5], None)],
)
def test_id_of_finds_a_usable_id_even_in_a_malformed_message(raw: Any, expected: int | None) -> None:
    """A malformed request with a good id can still be answered; anything else has no id."""
    assert id_of(raw) == expected


def test_request_types_are_the_ones_that_expect_an_answer() -> None:
    """Calls, gets, sets (when acknowledged) and stops are answered; the rest are not."""
    assert {str(code) for code in REQUEST_TYPES} == {"c", "g", "s", "stop"}
