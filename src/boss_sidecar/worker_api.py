"""The one declared API between host and worker: the worker's operations, the host's, and the event kinds.

Both sides use these names instead of string literals: the host calls ``Op.CALL_OBJECT`` (a plain ``str``
constant, so the wire is as before), the worker's ``WorkerService`` subclasses ``WorkerApi`` and the host's
receiver of the worker's events subclasses ``HostApi``, so mypy checks every implementation against the
declaration. A misspelt or renamed operation fails type-checking where it is used;
``tests/test_worker_api.py`` checks that each ``Op`` names a method of ``WorkerApi`` and each ``EventKind``
one of ``HostApi``, and back.

Host-safe: nothing here imports zenoh.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from boss_sidecar.samples import QueryReply, SampleRun


class Op:
    """What the host asks of the worker: each is a method of ``WorkerApi`` of the same name."""

    OPEN_SESSION: Final = "open_session"
    INFO: Final = "info"
    SYNC: Final = "sync"
    PUT_BATCH: Final = "put_batch"  # an event (one-way)
    DELETE: Final = "delete"
    GET: Final = "get"
    LIVELINESS_GET: Final = "liveliness_get"
    DECLARE_SUBSCRIBER: Final = "declare_subscriber"
    DECLARE_QUERYABLE: Final = "declare_queryable"
    DECLARE_TOKEN: Final = "declare_token"
    DECLARE_LIVELINESS_SUBSCRIBER: Final = "declare_liveliness_subscriber"
    UNDECLARE: Final = "undeclare"
    REPLY: Final = "reply"  # an event (one-way)
    HOST_OBJECT: Final = "host_object"
    CALL_OBJECT: Final = "call_object"
    GET_OBJECT_ATTRIBUTE: Final = "get_object_attribute"
    SET_OBJECT_ATTRIBUTE: Final = "set_object_attribute"
    DROP_OBJECT: Final = "drop_object"


DECLARE: dict[str, str] = {
    "subscriber": Op.DECLARE_SUBSCRIBER,
    "queryable": Op.DECLARE_QUERYABLE,
    "token": Op.DECLARE_TOKEN,
    "liveliness_subscriber": Op.DECLARE_LIVELINESS_SUBSCRIBER,
}
"""The operation that declares each kind of declaration the ledger keeps."""


class EventKind:
    """What the worker sends the host unasked (events, in order): each is a method of ``HostApi``."""

    SAMPLES: Final = "samples"
    QUERIES: Final = "queries"
    PUT_FAILED: Final = "put_failed"
    PUTS_DONE: Final = "puts_done"
    """Put batches (by number) the worker handed to zenoh: the host's confirmation of them."""
    LOGS: Final = "logs"


class HostOp:
    """What the worker asks of the host (a hosted object calling an object the host exposed)."""

    CALL_EXPORTED: Final = "call_exported"


class WorkerApi(Protocol):
    """The worker's operations, as the host calls them (``Endpoint.request(Op.X, args)``)."""

    def open_session(self, source: str, value: str | None) -> dict[str, Any]: ...
    def info(self) -> dict[str, Any]: ...
    def sync(self, timeout: float = 5.0) -> None: ...
    def put_batch(self, items: list[tuple[str, bytes, dict[str, Any] | None]], seq: int | None = None) -> None: ...
    def delete(self, key_expr: str, options: dict[str, Any] | None = None) -> None: ...
    def get(self, selector: str, options: dict[str, Any]) -> list[tuple[bool, str | None, bytes, str]]: ...
    def liveliness_get(self, key_expr: str, timeout: float) -> list[str]: ...
    def declare_subscriber(self, decl_id: int, key_expr: str) -> None: ...
    def declare_queryable(self, decl_id: int, key_expr: str, complete: bool = False) -> None: ...
    def declare_token(self, decl_id: int, key_expr: str) -> None: ...
    def declare_liveliness_subscriber(self, decl_id: int, key_expr: str, history: bool = False) -> None: ...
    def undeclare(self, decl_id: int) -> bool: ...
    def reply(self, query_id: int, replies: list[QueryReply], error: bytes | None = None) -> None: ...
    def host_object(
        self,
        obj_id: int,
        classname: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        default_name: str | None = None,
    ) -> dict[str, Any]: ...
    def call_object(self, obj_id: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...
    def get_object_attribute(self, obj_id: int, name: str) -> Any: ...
    def set_object_attribute(self, obj_id: int, name: str, value: Any) -> None: ...
    def drop_object(self, obj_id: int) -> bool: ...


class HostApi(Protocol):
    """What the host serves the worker: the event kinds, and calls to objects the host exposed."""

    def samples(self, runs: list[SampleRun]) -> None: ...
    def queries(self, items: list[tuple[Any, ...]]) -> None: ...
    def put_failed(self, errors: list[str]) -> None: ...
    def puts_done(self, seqs: list[int]) -> None: ...
    def logs(self, records: list[dict[str, Any]]) -> None: ...
    def call_exported(self, ref_id: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...


def names(declared: type) -> dict[str, str]:
    """The constants a namespace above declares, by attribute name."""
    return {name: value for name, value in vars(declared).items() if name.isupper() and isinstance(value, str)}
