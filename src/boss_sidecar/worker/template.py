"""Template process: ``python -m boss_sidecar.worker.template --fd N``. Never imported by the host.

It imports what workers need (zenoh, the worker code, HEROS and heros-boss when installed, the
modules of the classes a config names) and never opens a zenoh session, so it can fork safely
(``import zenoh`` alone is harmless; a session is not). Each fork request carries the worker's
channel as a file descriptor (SCM_RIGHTS); the child becomes a worker, sharing the template's
imported modules copy-on-write. The template stays single-threaded, reaps its children and
reports their exit status to the host, and exits when the host dies (channel EOF or the
parent-death signal). Its own workers outlive it: they watch the host, not the template.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import os
import pickle
import select
import signal
import socket
import sys
import traceback
from typing import Any

import boss_sidecar.worker.__main__ as worker_main

OPTIONAL_PRELOADS = ("heros", "boss.configuration", "boss.worker")
"""HEROS and heros-boss's factory and worker, when installed: what heroized workers use."""
MAX_MESSAGE = 1 << 20


def send(channel: socket.socket, message: dict[str, Any]) -> None:
    """One message on a SOCK_SEQPACKET socket: its boundaries are kept, so no framing is needed."""
    channel.sendall(pickle.dumps(message))


class Template:
    """The fork server: one request at a time, on one thread."""

    def __init__(self, channel: socket.socket, events: socket.socket) -> None:
        self._channel = channel  # requests from the host, each bringing the socket to answer on
        self._events = events  # exit reports of the workers
        self._children: set[int] = set()
        self._watched: dict[str, tuple[int, int]] = {}  # file -> (mtime_ns, size) of user-preloaded modules
        self._retired = False
        self._answering: socket.socket | None = None  # the socket the current request is answered on
        wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_read = wake_read

    # ----------------------------------------------------------------- preloading
    def preload(self, modules: list[str], *, optional: bool = False, watch: bool = True) -> dict[str, str]:
        """Import ``modules``; watch the files they brought in, so a later change retires the template."""
        failed: dict[str, str] = {}
        for name in modules:
            before = set(sys.modules)
            try:
                importlib.import_module(name)
            except Exception as exc:
                if not optional:
                    failed[name] = f"{type(exc).__name__}: {exc}"
                continue
            if watch:
                for added in set(sys.modules) - before:
                    self._watch(sys.modules.get(added))
        # Objects imported so far are never touched by a collection in the workers: pages stay shared.
        # No full collection first (as gc.freeze's documentation advises): after these imports it
        # found nothing to free, and took 13 ms of the template's start, before its first fork.
        gc.freeze()
        return failed

    def _watch(self, module: Any) -> None:
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            with contextlib.suppress(OSError):
                stat = os.stat(path)
                self._watched[path] = (stat.st_mtime_ns, stat.st_size)

    def _changed(self) -> str | None:
        """A preloaded file that changed on disk since it was imported, if any."""
        for path, seen in self._watched.items():
            try:
                stat = os.stat(path)
            except OSError:
                return path
            if (stat.st_mtime_ns, stat.st_size) != seen:
                return path
        return None

    # ----------------------------------------------------------------- serving
    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
        signal.set_wakeup_fd(self._wake_write)
        send(self._channel, {"kind": "ready", "pid": os.getpid()})
        while True:
            readable, _, _ = select.select([self._channel.fileno(), self._wake_read], [], [])
            if self._wake_read in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_read, 4096)
                self._reap()
            if self._channel.fileno() in readable and not self._handle_request():
                return
            if self._retired and not self._children:
                return

    def _handle_request(self) -> bool:
        """Serve one request; False when the host is gone. Its first descriptor is the socket to answer on."""
        try:
            data, fds, _flags, _address = socket.recv_fds(self._channel, MAX_MESSAGE, 2)
        except OSError:
            return False
        if not data:
            return False
        request = pickle.loads(data)
        kind = request["kind"]
        answer = socket.socket(fileno=fds.pop(0)) if fds else None
        self._answering = answer
        try:
            reply: dict[str, Any] | None = None
            if kind == "fork":
                reply = self._fork(request, fds)
            elif kind == "preload":
                sys.path.extend(path for path in request["path"] if path not in sys.path)
                reply = {"kind": "preloaded", "failed": self.preload(request["modules"])}
            elif kind == "retire":
                self._retired = True
            if reply is not None and answer is not None:
                with contextlib.suppress(OSError):
                    send(answer, reply)
        finally:
            if answer is not None:
                answer.close()
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        return True

    def _fork(self, request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        if len(fds) != 1:
            return {"kind": "refused", "error": f"expected one channel descriptor, got {len(fds)}"}
        changed = self._changed()
        if changed is not None or self._retired:
            return {"kind": "stale", "path": changed or "template retired"}
        pid = os.fork()
        if pid == 0:
            self._become_worker(request, fds[0])
        self._children.add(pid)
        return {"kind": "forked", "pid": pid}

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._children.clear()
                return
            if pid == 0:
                return
            self._children.discard(pid)
            with contextlib.suppress(OSError):
                send(self._events, {"pid": pid, "code": os.waitstatus_to_exitcode(status)})

    # ----------------------------------------------------------------- in the child
    def _become_worker(self, request: dict[str, Any], fd: int) -> None:
        """The forked child: leave the template's state behind and run the worker; never returns."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(
                worker_main.PARENT_DEATH_SIGNAL, signal.SIG_IGN
            )  # the template's; the worker watches the host
            for own in (self._wake_read, self._wake_write):
                os.close(own)
            self._channel.close()
            self._events.close()
            if self._answering is not None:
                self._answering.close()
            os.setpgid(0, 0)  # its own process group, as a spawned worker has
            os.environ.clear()
            os.environ.update(request["env"])
            extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
            sys.path[:0] = extra
            os.chdir(request["cwd"])
            argv = _with_value(request["argv"], "--fd", str(fd))
            _retitle([request["executable"], "-m", "boss_sidecar.worker", *argv])
            sys.argv = [worker_main.__file__, *argv]  # as a fresh worker's: hosted code may read it
            worker_main.main(["--forked", *argv])  # before argv: it ends with "-- name"; exits through os._exit
        except BaseException:
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            os._exit(code)


def _with_value(argv: list[str], option: str, value: str) -> list[str]:
    out = list(argv)
    if option in out:
        out[out.index(option) + 1] = value
    else:
        out += [option, value]
    return out


def _retitle(argv: list[str]) -> None:
    """Show the worker's own command line in ps and /proc (the template left room for it).

    The title goes into the template's original argv area; its last byte stays non-zero, which
    tells Linux to read the command line up to the first zero byte (the setproctitle convention).
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        arg_start, arg_end = int(fields[45]), int(fields[46])  # fields 48 and 49 of proc(5)
        room = arg_end - arg_start
        title = " ".join(argv).encode()[: room - 2] + b"\0"
        buffer = title + b" " * (room - len(title))
        ctypes.memmove(arg_start, buffer, room)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m boss_sidecar.worker.template")
    parser.add_argument("--fd", type=int, required=True, help="inherited request channel (a Unix socket)")
    parser.add_argument("--events-fd", type=int, required=True, help="inherited channel for exit reports")
    parser.add_argument("--parent-pid", type=int, default=os.getppid())
    parser.add_argument("--title-room", default="", help="padding: room for a forked worker's command line")
    args = parser.parse_args(argv)
    host_pid = args.parent_pid
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the host

    def on_parent_death(_signum: int, _frame: Any) -> None:
        if os.getppid() != host_pid:
            os._exit(0)

    signal.signal(worker_main.PARENT_DEATH_SIGNAL, on_parent_death)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(worker_main.PR_SET_PDEATHSIG, int(worker_main.PARENT_DEATH_SIGNAL), 0, 0, 0)
    if os.getppid() != host_pid:
        os._exit(0)
    template = Template(socket.socket(fileno=args.fd), socket.socket(fileno=args.events_fd))
    template.preload(list(OPTIONAL_PRELOADS), optional=True, watch=False)
    template.serve()
    os._exit(0)


if __name__ == "__main__":
    main()
