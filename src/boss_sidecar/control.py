"""The launcher's control socket: how ``boss-sidecar health`` reaches a running ``boss-sidecar run``.

A Unix stream socket, mode 0600 in a 0700 directory of this user, that also refuses peers of
another uid (SO_PEERCRED). One JSON request line per connection, one JSON answer line back.
Every wait is bounded on both sides, and each connection is served on its own short-lived
thread (a few at most), so a stuck or malicious client never holds up the launcher.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from boss_sidecar.errors import SidecarError
from boss_sidecar.logs import get_logger

ENV_SOCKET = "BOSS_SIDECAR_SOCKET"
SOCKET_NAME = "control.sock"
REQUEST_TIMEOUT = 5.0
"""Seconds a client may take to send its request and receive the answer, on either side."""
MAX_REQUEST_BYTES = 64 * 1024
MAX_CLIENTS = 8

_log = get_logger("boss_sidecar.control")

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(SidecarError):
    """The control socket cannot be set up (another launcher listens, unsafe directory, ...)."""


class LauncherUnreachable(SidecarError):
    """No launcher answered on the control socket in time."""


def default_socket_path() -> Path:
    """``$BOSS_SIDECAR_SOCKET``, else ``$XDG_RUNTIME_DIR/boss-sidecar/control.sock``, else
    ``/tmp/boss-sidecar-$UID/control.sock``: the same for ``run`` and ``health`` of one user."""
    explicit = os.environ.get(ENV_SOCKET)
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "boss-sidecar" / SOCKET_NAME
    return Path("/tmp") / f"boss-sidecar-{os.getuid()}" / SOCKET_NAME


def _private_directory(directory: Path) -> None:
    """Create the socket's directory 0700; an existing one must be ours (or root's, like /tmp).

    An existing directory is never changed: the socket file's own 0600 mode and the uid check
    protect it even in a shared directory.
    """
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700, parents=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise ControlError(f"{directory} is not a directory")
    if info.st_uid not in (os.getuid(), 0):
        raise ControlError(f"{directory} belongs to uid {info.st_uid}, not to this user ({os.getuid()})")


def _peer_uid(connection: socket.socket) -> int | None:
    """The uid of the process at the other end (Linux SO_PEERCRED); None where unsupported."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    credentials = connection.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return int(uid)


def _read_line(connection: socket.socket, timeout: float) -> bytes:
    """One newline-terminated message, within ``timeout`` in all (however slowly it trickles in)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete message within {timeout:g}s")
        connection.settimeout(remaining)
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError(f"message longer than {MAX_REQUEST_BYTES} bytes")
    return data.split(b"\n", 1)[0]


class ControlServer:
    """Listens on ``path`` and answers each request with ``handler(request)``."""

    def __init__(self, path: Path, handler: Handler, *, allowed_uid: int | None = None) -> None:
        self.path = path
        self._handler = handler
        self._allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._inode: int | None = None

    def start(self) -> None:
        """Bind (replacing a stale socket file) and serve on a daemon thread."""
        _private_directory(self.path.parent)
        self._remove_stale()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
        except OSError as exc:
            listener.close()
            raise ControlError(f"cannot listen on {self.path}: {exc}") from None
        os.chmod(self.path, 0o600)
        listener.listen(MAX_CLIENTS)
        listener.setblocking(False)
        self._inode = self.path.stat().st_ino
        self._listener = listener
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="control-server", daemon=True)
        self._thread.start()
        _log.info("control socket listening", path=str(self.path))

    def _remove_stale(self) -> None:
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise ControlError(f"{self.path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)  # nobody listens: left over from a launcher that died
        else:
            raise ControlError(f"another launcher is listening on {self.path}")
        finally:
            probe.close()

    def close(self) -> None:
        """Stop accepting and remove the socket file (if it is still ours)."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(2.0)
        listener.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()

    def _serve(self) -> None:
        listener = self._listener
        assert listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fd == self._wake_r:
                        return
                    with contextlib.suppress(BlockingIOError, InterruptedError):
                        connection, _address = listener.accept()
                        self._dispatch(connection)

    def _dispatch(self, connection: socket.socket) -> None:
        if not self._slots.acquire(blocking=False):
            _log.warning("control socket busy; connection dropped")
            connection.close()
            return
        threading.Thread(target=self._answer, args=(connection,), name="control-client", daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        try:
            with connection:
                connection.setblocking(True)
                connection.settimeout(REQUEST_TIMEOUT)
                uid = _peer_uid(connection)
                if uid is not None and uid != self._allowed_uid:
                    _log.warning("control connection refused: another user", peer_uid=uid)
                    return
                answer = self._respond(_read_line(connection, REQUEST_TIMEOUT))
                connection.sendall(json.dumps(answer).encode() + b"\n")
        except (OSError, ValueError) as exc:
            _log.debug("control client dropped", error=str(exc))
        finally:
            self._slots.release()

    def _respond(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "bad request: expected a JSON object"}
        try:
            return self._handler(request)
        except Exception as exc:
            _log.exception("control request failed")
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def request(path: Path, message: dict[str, Any], timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    """Send one request to the launcher on ``path``; LauncherUnreachable if none answers in time."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect(str(path))
            connection.sendall(json.dumps(message).encode() + b"\n")
            line = _read_line(connection, timeout)
    except (OSError, ValueError) as exc:
        raise LauncherUnreachable(f"no launcher on {path}: {exc}") from None
    try:
        answer = json.loads(line)
    except ValueError:
        raise LauncherUnreachable(f"no launcher on {path}: unreadable answer {line[:80]!r}") from None
    if not isinstance(answer, dict):
        raise LauncherUnreachable(f"no launcher on {path}: unexpected answer {answer!r}")
    return answer
