"""The exceptions boss-sidecar raises, all under one base so callers can catch them together."""

from __future__ import annotations


class SidecarError(Exception):
    """Base of every error boss-sidecar raises itself."""


class ProtocolError(SidecarError):
    """A message on the channel did not follow the wire format; the text names what was wrong."""


class EncodeError(SidecarError, TypeError):
    """An argument, result or value could not be pickled for the channel; nothing was sent."""


class MessageTooLarge(SidecarError, ValueError):
    """A message is larger than the channel's limit; nothing was sent."""


class SidecarCrashed(SidecarError):
    """The peer died or the channel broke while the call was in flight (or before it was made)."""


class CallTimeout(SidecarError, TimeoutError):
    """The call got no answer within its timeout; a late answer is dropped."""


class SidecarUnavailable(SidecarError):
    """The sidecar is stopped, failed (gave up restarting), or the endpoint was closed locally."""


class PutsUnconfirmed(SidecarError):
    """Puts handed to a worker that ended before confirming them: each may or may not be published.

    ``count`` is exactly how many; puts the host had not handed over yet go to the next worker.
    """

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


class ConfigError(SidecarError, ValueError):
    """A configuration value is invalid; the text names the file, table and field where known."""


class ZenohError(SidecarError):
    """zenoh refused an operation (invalid key expression, closed session, ...); carries its text.

    Defined here, not in the worker, so that unpickling one in the host never imports zenoh.
    """


class RemoteError(SidecarError):
    """An exception raised by the peer that could not travel as itself.

    Carries the remote type name, message and traceback text so nothing is lost.
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __reduce__(self) -> tuple[type[RemoteError], tuple[str, str, str]]:
        return (type(self), (self.type_name, self.message, self.traceback))

    def __str__(self) -> str:
        text = f"{self.type_name}: {self.message}"
        if self.traceback:
            text += f"\n--- remote traceback ---\n{self.traceback.rstrip()}"
        return text
