"""What the endpoint does with each message read: decode it, route it by type, salvage what does not decode.

Kept apart from ``rpc``: replies settle the waiting request by id, requests go to the server (see
_serving), hello and heartbeats are answered here. A message that does not unpickle, does not follow
the wire format or is over the size limit still answers what it was for, so nothing waits for it.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from boss_sidecar._framing import _Oversized
from boss_sidecar._requests import _Requests
from boss_sidecar._salvage import _load_structure, _salvage, _StandIn
from boss_sidecar._serving import _Server
from boss_sidecar.errors import MessageTooLarge, ProtocolError, RemoteError
from boss_sidecar.protocol import (
    PROTOCOL_VERSION,
    REQUEST_TYPES,
    Error,
    Hello,
    MessageType,
    Ping,
    Pong,
    Result,
    UnknownMessageType,
    decode,
    id_of,
)

if TYPE_CHECKING:
    from boss_sidecar.rpc import Endpoint

Frame = memoryview | bytes | bytearray | _Oversized


class _Inbound:
    """Routes the messages read on ``endpoint``'s channel."""

    def __init__(self, endpoint: Endpoint, requests: _Requests, server: _Server, max_bytes: int) -> None:
        self._endpoint = endpoint
        self._name = endpoint.name
        self._log = endpoint._log
        self._requests = requests
        self._server = server
        self._max_bytes = max_bytes
        self._handlers: dict[MessageType, Callable[[Any], None]] = {
            MessageType.CALL: server.on_call,
            MessageType.GET: server.on_get,
            MessageType.SET: server.on_set,
            MessageType.RESULT: self._on_result,
            MessageType.ERROR: self._on_error,
            MessageType.HELLO: self._on_hello,
            MessageType.PING: self._on_ping,
            MessageType.PONG: self._on_pong,
            MessageType.EVENT: server.on_event,
            MessageType.STOP: server.on_stop_request,
        }

    def route(self, batch: list[Frame]) -> BaseException | None:
        """Route every message read. An interrupt (Ctrl-C in a caller reading) is returned once all are routed, so
        none is lost."""
        interrupt = None
        at, end = 0, len(batch)
        while at < end:
            try:  # the loop inside: an interrupt between two messages (at the jump back) is caught too
                while at < end:
                    frame = batch[at]
                    at += 1
                    if isinstance(frame, _Oversized):
                        self._oversized(frame)
                    else:
                        self._handle_bytes(frame)
            except BaseException as exc:
                interrupt = interrupt or exc
        return interrupt

    def _handle_bytes(self, data: bytes | bytearray | memoryview) -> None:
        try:
            raw = pickle.loads(data)
        except Exception as exc:
            self._undecodable(bytes(data), exc)
            return
        try:
            message = decode(raw)
        except UnknownMessageType as exc:
            self._log.debug("ignored message of unknown type", error=str(exc))
            return
        except ProtocolError as exc:
            self._malformed(raw, exc)
            return
        try:
            self._handlers[message.TYPE](message)
        except Exception:
            self._log.exception("handler failed", type=str(message.TYPE))

    # ----------------------------------------------------------------- replies and heartbeats
    def _on_result(self, message: Result) -> None:
        self._requests.answer(message.id, message.payload)

    def _on_error(self, message: Error) -> None:
        error = message.error
        if message.id not in self._requests.table:
            self._log.debug("error reply for no pending request", id=message.id)
            return
        if message.traceback and not isinstance(error, RemoteError):
            error.add_note(f"--- remote traceback ({self._name}'s peer) ---\n{message.traceback.rstrip()}")
        self._requests.answer(message.id, error=error)

    def _on_hello(self, message: Hello) -> None:
        if message.version != PROTOCOL_VERSION:
            self._log.warning("peer speaks another protocol version", peer=message.version, ours=PROTOCOL_VERSION)
        self._endpoint.peer = message
        self._endpoint.peer_ready.set()

    def _on_ping(self, message: Ping) -> None:
        self._server.send_quietly(Pong(id=message.id, sent=message.sent, overdue=self._server.overdue()))

    def _on_pong(self, message: Pong) -> None:
        self._endpoint.peer_overdue = message.overdue
        self._requests.answer(message.id, time.monotonic() - message.sent)

    # ----------------------------------------------------------------- salvage
    def _malformed(self, raw: object, error: ProtocolError) -> None:
        """Log it; fail the call it answers, or answer the request it was, so nothing waits."""
        message_id = id_of(raw)
        kind = raw.get("type") if isinstance(raw, dict) and isinstance(raw.get("type"), str) else None
        self._log.warning("malformed message", error=str(error), id=message_id)
        if message_id is None:
            return
        pending = self._requests.table.get(message_id) if kind in (MessageType.RESULT, MessageType.ERROR) else None
        if pending is not None:
            problem = ProtocolError(f"{self._name}: malformed reply to {pending.what}: {error}")
            self._requests.answer(message_id, error=problem)
        elif kind in REQUEST_TYPES and not (kind == MessageType.SET and not raw.get("ack")):  # type: ignore[attr-defined]  # kind set means raw is a dict
            self._server.send_quietly(Error(id=message_id, error=error))

    def _undecodable(self, data: bytes, error: Exception) -> None:
        """A message that does not unpickle here: answer what it was for from its structure.

        Its structure loads with stand-ins for every class it names (nothing is imported or run),
        which yields its id and type; an exception in it becomes a RemoteError with the remote
        type name, message and traceback."""
        raw = _load_structure(data)
        message_id = id_of(raw)
        kind = raw.get("type") if isinstance(raw, dict) and isinstance(raw.get("type"), str) else None
        self._log.warning("message could not be unpickled", error=repr(error), size=len(data), id=message_id, type=kind)
        if message_id is None or not isinstance(raw, dict):
            return
        pending = self._requests.table.get(message_id) if kind in (MessageType.RESULT, MessageType.ERROR) else None
        if pending is not None:
            remote = raw.get("error")
            if kind == MessageType.ERROR and isinstance(remote, _StandIn):
                text = raw.get("traceback")
                problem: BaseException = RemoteError(
                    remote.qualified, remote.text(), text if isinstance(text, str) else ""
                )
            else:
                problem = ProtocolError(f"{self._name}: reply to {pending.what} could not be unpickled here: {error!r}")
                problem.__cause__ = error
            self._requests.answer(message_id, error=problem)
        elif kind in REQUEST_TYPES and not (kind == MessageType.SET and not raw.get("ack")):
            problem = ProtocolError(f"{self._name}: request could not be unpickled here: {error!r}")
            self._server.send_quietly(Error(id=message_id, error=problem))

    def _oversized(self, frame: _Oversized) -> None:
        """A message over our limit was read past: fail the call it answers, or refuse the request."""
        found = _salvage(frame.start)
        ids = found.get("ids", [])
        self._log.warning("message over the size limit skipped", size=frame.size, limit=self._max_bytes, **found)
        problem = f"{frame.size} bytes exceeds the limit of {self._max_bytes} bytes"
        for message_id in ids:
            pending = self._requests.table.get(message_id)
            if pending is not None:
                self._requests.answer(
                    message_id, error=MessageTooLarge(f"{self._name}: reply to {pending.what} of {problem}")
                )
                return
        # Our peers put the id first; a BOSS peer puts it last (out of reach), and raises on any error reply.
        if ids and self._endpoint.peer is not None and found.get("type") in REQUEST_TYPES - {MessageType.SET}:
            self._server.send_quietly(Error(id=ids[0], error=MessageTooLarge(f"{self._name}: request of {problem}")))
