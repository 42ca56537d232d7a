"""Plain values that cross the channel: what a subscriber, a querier and a queryable see.

They hold only bytes and strings, so the host can use them without importing zenoh.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")

SampleRun = tuple[int, Any, list[bytes], Any, Any, Any, Any]
"""Wire form of a run of samples for one declaration: its id, then one column per field (key,
payload, kind, encoding, timestamp, attachment). Payloads are always a list; any other column is
a list, or its one value when every sample has the same (see ``column``): a stream on one key
then costs its key, kind and encoding once per run, not once per sample, on both sides."""


@dataclass(frozen=True, slots=True)
class Sample:
    """A published value (kind ``"put"``) or a deletion (kind ``"delete"``)."""

    key_expr: str
    payload: bytes
    kind: str = "put"
    encoding: str = "zenoh/bytes"
    timestamp: str | None = None
    attachment: bytes | None = None

    def text(self, encoding: str = "utf-8") -> str:
        """The payload decoded as text."""
        return self.payload.decode(encoding)


def column(values: list[T]) -> list[T] | T:
    """``values`` for a ``SampleRun``: the one value when all are equal (values are never lists)."""
    first = values[0]
    return first if values.count(first) == len(values) else values


_new = object.__new__
_set_fields = tuple(getattr(Sample, field.name).__set__ for field in fields(Sample))


def samples_of(run: SampleRun) -> list[Sample]:
    """The samples of a ``SampleRun``, in order.

    Built through the slots directly: a frozen dataclass's ``__init__`` takes about twice as long,
    and this runs once per delivered sample."""
    _, keys, payloads, kinds, encodings, timestamps, attachments = run
    count = len(payloads)
    columns = [
        values if isinstance(values, list) else itertools.repeat(values, count)
        for values in (keys, kinds, encodings, timestamps, attachments)
    ]
    set_key, set_payload, set_kind, set_encoding, set_timestamp, set_attachment = _set_fields
    samples = []
    for key, payload, kind, encoding, timestamp, attachment in zip(
        columns[0], payloads, columns[1], columns[2], columns[3], columns[4], strict=False
    ):
        sample = _new(Sample)
        set_key(sample, key)
        set_payload(sample, payload)
        set_kind(sample, kind)
        set_encoding(sample, encoding)
        set_timestamp(sample, timestamp)
        set_attachment(sample, attachment)
        samples.append(sample)
    return samples


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer to a ``get``: a sample when ``ok``, else the queryable's error payload."""

    ok: bool
    key_expr: str | None
    payload: bytes
    encoding: str = "zenoh/bytes"

    def text(self, encoding: str = "utf-8") -> str:
        return self.payload.decode(encoding)


@dataclass(frozen=True, slots=True)
class Query:
    """A query that reached one of our queryables, as the host-side handler sees it."""

    selector: str
    key_expr: str
    parameters: str
    payload: bytes | None
    encoding: str | None
    attachment: bytes | None


@dataclass(frozen=True, slots=True)
class QueryReply:
    """What a queryable handler may return to answer on a key other than the query's own."""

    key_expr: str
    payload: bytes | str
    encoding: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A host object passed to the worker by reference, so a hosted object can call back."""

    ref_id: int
    type_name: str

    def __repr__(self) -> str:
        return f"<reference to host object {self.type_name} #{self.ref_id}>"


def normalise_payload(payload: Any, what: str) -> bytes:
    """bytes for the wire; str is UTF-8 encoded; anything else is a clear TypeError."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    raise TypeError(f"{what}: payload must be bytes or str, got {type(payload).__name__}")
