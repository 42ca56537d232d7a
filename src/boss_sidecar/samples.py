"""Plain values that cross the channel: what a subscriber, a querier and a queryable see.

They hold only bytes and strings, so the host can use them without importing zenoh.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SampleTuple = tuple[str, bytes, str, str, "str | None", "bytes | None"]
"""Wire form of a Sample: key, payload, kind, encoding, timestamp, attachment."""


@dataclass(frozen=True, slots=True)
class Sample:
    """A published value (kind ``"put"``) or a deletion (kind ``"delete"``)."""

    key_expr: str
    payload: bytes
    kind: str = "put"
    encoding: str = "zenoh/bytes"
    timestamp: str | None = None
    attachment: bytes | None = None

    @classmethod
    def from_wire(cls, item: SampleTuple) -> Sample:
        return cls(*item)

    def text(self, encoding: str = "utf-8") -> str:
        """The payload decoded as text."""
        return self.payload.decode(encoding)


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
