"""Property test: whatever arrives on the channel, an Endpoint keeps answering correct calls.

Random dicts (well-formed, malformed, of known and unknown types) and random bytes are thrown at
a live Endpoint; after each batch a correct call must still get its own answer.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boss_sidecar.protocol import Call, MessageType
from boss_sidecar.rpc import Endpoint

WAIT = 30.0

FIELD_NAMES = ["id", "type", "method", "args", "kwargs", "name", "value", "payload", "error", "traceback"]
FIELD_NAMES += ["ack", "sent", "version", "pid", "reason", "timeout", "overdue"]

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40)
    | st.sampled_from([ValueError("x"), KeyError("k"), RuntimeError()]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)

# Dicts that look like messages: a real type code most of the time, fields drawn from the real names.
message_like = st.fixed_dictionaries(
    {"type": st.sampled_from([str(code) for code in MessageType]) | st.text(max_size=6) | values},
    optional={"id": st.integers(min_value=-(2**70), max_value=2**70) | values},
).flatmap(
    lambda base: st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), values, max_size=6).map(
        lambda extra: {**extra, **base}
    )
)

# Valid messages of every type, then maybe broken: a field dropped or given a random value.
TEMPLATES: list[dict[str, Any]] = [
    {"type": "c", "method": "echo", "args": (1,), "kwargs": {}},
    {"type": "c", "method": "_private", "args": (), "kwargs": {}, "timeout": 1.0},
    {"type": "g", "name": "echo"},
    {"type": "s", "name": "echo", "value": 1, "ack": True},
    {"type": "s", "name": "anything", "value": 1},
    {"type": "r", "payload": None},
    {"type": "e", "error": ValueError("stray"), "traceback": "remote"},
    {"type": "hello", "version": 1, "pid": 1, "name": "fuzzer"},
    {"type": "ping", "sent": 0.0},
    {"type": "pong", "sent": 0.0, "overdue": []},
    {"type": "event", "method": "echo", "args": (), "kwargs": {}},
    {"type": "stop", "reason": "fuzz"},
]


@st.composite
def valid_then_broken(draw: st.DrawFn) -> dict[str, Any]:
    message = {**draw(st.sampled_from(TEMPLATES)), "id": draw(st.integers(min_value=0, max_value=2**64))}
    change = draw(st.sampled_from(["keep", "drop", "replace"]))
    field = draw(st.sampled_from(sorted(message)))
    if change == "drop":
        del message[field]
    elif change == "replace":
        message[field] = draw(values)
    return message


anything = st.one_of(
    valid_then_broken().map(lambda raw: ("object", raw)),
    message_like.map(lambda raw: ("object", raw)),
    values.map(lambda raw: ("object", raw)),
    st.binary(max_size=200).map(lambda raw: ("bytes", raw)),
)


class Served:
    """Nothing can be set on it (no __dict__), so fuzzed sets cannot replace ``echo``."""

    __slots__ = ()

    def echo(self, *args: Any, **kwargs: Any) -> Any:
        return args, kwargs


@pytest.fixture
def channel() -> Iterator[tuple[Connection, Endpoint]]:
    raw, theirs = Pipe()
    endpoint = Endpoint(theirs, Served(), name="fuzzed", max_message_bytes=1 << 16)
    try:
        yield raw, endpoint
    finally:
        endpoint.close()
        raw.close()


def _answer(raw: Connection, message_id: int) -> dict[str, Any]:
    """The reply to ``message_id``, skipping whatever else the endpoint says meanwhile."""
    while True:
        assert raw.poll(WAIT), "the endpoint stopped answering"
        reply = raw.recv()
        if isinstance(reply, dict) and reply.get("id") == message_id and reply.get("type") in ("r", "e"):
            return reply


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(anything, min_size=1, max_size=8), check=st.integers(min_value=0, max_value=2**62))
def test_endpoint_answers_correct_calls_after_any_input(
    channel: tuple[Connection, Endpoint], batch: list[tuple[str, Any]], check: int
) -> None:
    """Garbage, malformed and stray messages are survived; the next correct call gets its own answer."""
    raw, endpoint = channel
    for kind, item in batch:
        raw.send_bytes(item if kind == "bytes" else pickle.dumps(item))
    message_id = -(check + 1)  # negative: never the id of anything fuzzed as a reply to us
    raw.send(Call(id=message_id, method="echo", args=(check,), kwargs={"k": "v"}).to_wire())
    assert _answer(raw, message_id) == {"id": message_id, "type": "r", "payload": ((check,), {"k": "v"})}
    assert not endpoint.is_closed
