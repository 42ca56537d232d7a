"""Workers forked from a shared template process instead of started as fresh interpreters.

One template per host process (``python -m boss_sidecar.worker.template``) imports zenoh, the
worker code, HEROS and heros-boss and the classes a config names, but never opens a session,
so forking it is safe; every worker it forks shares those imported modules copy-on-write. The
host passes each worker's end of its private socketpair to the template (SCM_RIGHTS); the
template forks, reaps, and reports each exit status. A template that died is started again; one
whose preloaded files changed on disk is retired (it keeps reaping its workers, forks no more)
and replaced, so a restart picks up the change. Where it cannot be used (not Linux, or the
``worker_template=False`` option), workers start as fresh interpreters. Never imports zenoh.

This module imports only the standard library, so a host can call ``start()`` first thing and
let the template import zenoh while the host imports the rest (structlog, the supervisor) on the
other core; the supervisor's side, ``TemplateBackend``, is in ``_template_backend``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

from boss_sidecar._process import worker_environment

if TYPE_CHECKING:
    from boss_sidecar._template_backend import TemplateBackend
    from boss_sidecar.policy import SidecarPolicy
    from boss_sidecar.supervisor import ProcessBackend

WORKER_MODULE = "boss_sidecar.worker"
TEMPLATE_MODULE = "boss_sidecar.worker.template"
START_TIMEOUT = 30.0
"""Seconds a new template may take to import what it preloads."""
REQUEST_TIMEOUT = 10.0
"""Seconds a fork or preload request may take to be answered."""
EXIT_UNKNOWN = 255
"""Exit status of a worker whose template died before reporting it (only the parent can reap)."""
TITLE_ROOM = 2048
"""Characters of padding in the template's command line: room for a forked worker to show its own."""
MAX_MESSAGE = 1 << 20


def log() -> Any:
    """The module's logger; structlog is imported on the first record, not before the template starts."""
    from boss_sidecar.logs import get_logger  # noqa: PLC0415 - not needed to start the template

    return get_logger("boss_sidecar.template")


class TemplateUnavailable(Exception):
    """The template could not start or stopped answering: start the worker as a fresh interpreter."""


class _Stale(Exception):
    """A preloaded file changed on disk since the template imported it."""


def available() -> bool:
    """Linux with pidfds and SCM_RIGHTS helpers: what forking from a template needs."""
    return sys.platform.startswith("linux") and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")


class ForkedWorker:
    """A worker the template forked: the host did not spawn it, so its exit arrives as a report.

    Signals go through a pidfd, so a recycled pid is never signalled.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = threading.Event()
        self._lock = threading.Lock()
        self._pidfd: int | None = None
        with contextlib.suppress(OSError):  # already gone: its exit report follows
            self._pidfd = os.pidfd_open(pid)

    def _ended(self, code: int) -> None:
        with self._lock:
            if self.returncode is None:
                self.returncode = code
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        self._exited.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        with self._lock, contextlib.suppress(ProcessLookupError):
            if self._pidfd is not None and self.returncode is None:
                signal.pidfd_send_signal(self._pidfd, sig)

    def _pidfd_for_watch(self) -> int | None:
        return self._pidfd


class TemplateProcess:
    """The host's handle of one template process.

    Two channels: requests, each bringing a socket for its answer, and events, where a reader thread
    receives the workers' exit reports.
    """

    def __init__(self, preloads: list[str]) -> None:
        self._requests, template_requests = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._events, template_events = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._workers: dict[int, ForkedWorker] = {}
        self._early_exits: dict[int, int] = {}  # exit reports read before the fork's answer was
        self._workers_lock = threading.Lock()
        self._ended = False  # the events channel ended: the template is gone
        self.alive = True
        command = [
            sys.executable,
            "-m",
            TEMPLATE_MODULE,
            "--fd",
            str(template_requests.fileno()),
            "--events-fd",
            str(template_events.fileno()),
            "--parent-pid",
            str(os.getpid()),
            "--title-room",
            "." * TITLE_ROOM,
        ]
        try:
            self.process = subprocess.Popen(
                command,
                pass_fds=[template_requests.fileno(), template_events.fileno()],
                env=worker_environment(),
                stdin=subprocess.DEVNULL,
                close_fds=True,
                process_group=0,
            )
        except OSError as exc:
            self._requests.close()
            self._events.close()
            raise TemplateUnavailable(f"could not start the template: {exc}") from exc
        finally:
            template_requests.close()
            template_events.close()
        threading.Thread(target=self._read_events, name="template-events", daemon=True).start()
        ready = self._answer(self._requests, START_TIMEOUT, "start")
        if ready.get("kind") != "ready":
            self.close()
            raise TemplateUnavailable(f"template answered {ready!r} instead of ready")
        if preloads:
            for module, why in self.preload(preloads).items():
                log().warning("template could not preload", module=module, error=why)

    @property
    def pid(self) -> int:
        return self.process.pid

    # ----------------------------------------------------------------- requests
    def fork(self, argv: list[str], channel_fd: int, env: dict[str, str]) -> ForkedWorker:
        request = {"kind": "fork", "argv": argv, "env": env, "cwd": os.getcwd(), "executable": sys.executable}
        reply = self._request(request, (channel_fd,))
        if reply["kind"] == "stale":
            raise _Stale(reply["path"])
        if reply["kind"] != "forked":
            raise TemplateUnavailable(f"template refused to fork: {reply.get('error', reply)}")
        worker = ForkedWorker(reply["pid"])
        with self._workers_lock:
            early = self._early_exits.pop(worker.pid, None)
            if early is None and not self._ended:
                self._workers[worker.pid] = worker
        if early is not None:
            worker._ended(early)
        elif self._ended:  # the template died right after forking it: no report will come
            threading.Thread(target=_watch_orphans, args=({worker.pid: worker},), daemon=True).start()
        return worker

    def preload(self, modules: list[str]) -> dict[str, str]:
        """Import ``modules`` in the template; which failed, and why."""
        path = [os.path.abspath(entry) if entry else os.getcwd() for entry in sys.path]  # where the host finds them
        failed: dict[str, str] = self._request({"kind": "preload", "modules": modules, "path": path})["failed"]
        return failed

    def retire(self) -> None:
        """Fork no more; reap the workers forked so far, then exit."""
        with contextlib.suppress(OSError):
            self._requests.sendall(pickle.dumps({"kind": "retire"}))

    def close(self) -> None:
        """Stop the template now (its workers live on: they watch the host, not it)."""
        self.alive = False
        for channel in (self._requests, self._events):
            with contextlib.suppress(OSError):
                channel.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    def _request(self, request: dict[str, Any], fds: tuple[int, ...] = ()) -> dict[str, Any]:
        """Send a request with a reply socket of its own: requests from many threads are in flight at
        once, none waits for another's answer, and no thread hands an answer to another."""
        if not self.alive:
            raise TemplateUnavailable("template is gone")
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with mine:
            try:
                with theirs:
                    socket.send_fds(self._requests, [pickle.dumps(request)], [theirs.fileno(), *fds])
            except OSError as exc:
                self.close()
                raise TemplateUnavailable(f"template channel failed: {exc}") from exc
            return self._answer(mine, REQUEST_TIMEOUT, request["kind"])

    def _answer(self, channel: socket.socket, timeout: float, what: str) -> dict[str, Any]:
        """The template's answer on ``channel``, within ``timeout``."""
        ready, _, _ = select.select([channel], [], [], timeout)
        if not ready:
            self.close()
            raise TemplateUnavailable(f"template did not answer {what} within {timeout:g}s")
        try:
            data = channel.recv(MAX_MESSAGE)
        except OSError:
            data = b""
        if not data:
            self.close()
            raise TemplateUnavailable(f"template exited ({self.process.poll()}) before answering {what}")
        answer: dict[str, Any] = pickle.loads(data)
        return answer

    # ----------------------------------------------------------------- the events thread
    def _read_events(self) -> None:
        """Pass each exit report to its worker; when the template ends, watch the workers it left."""
        while True:
            try:
                data = self._events.recv(MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                break
            report = pickle.loads(data)
            with self._workers_lock:
                worker = self._workers.pop(report["pid"], None)
                if worker is None:
                    self._early_exits[report["pid"]] = report["code"]
            if worker is not None:
                worker._ended(report["code"])
        self.alive = False
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(REQUEST_TIMEOUT)
        self._orphaned()

    def _orphaned(self) -> None:
        """The template is gone: no exit report will come for the workers it left."""
        with self._workers_lock:
            self._ended = True
            workers, self._workers = dict(self._workers), {}
        if workers:
            log().warning("template ended before its workers", template_pid=self.pid, workers=sorted(workers))
        _watch_orphans(workers)


def _watch_orphans(workers: dict[int, ForkedWorker]) -> None:
    """Learn of these workers' exits from their pidfds; the status is unknown (their parent is gone)."""
    while workers:
        watched = {fd: pid for pid, worker in workers.items() if (fd := worker._pidfd_for_watch()) is not None}
        for pid in [pid for pid, worker in workers.items() if worker._pidfd_for_watch() is None]:
            workers.pop(pid)._ended(EXIT_UNKNOWN)
        if not watched:
            return
        readable, _, _ = select.select(list(watched), [], [])
        for fd in readable:
            workers.pop(watched[fd])._ended(EXIT_UNKNOWN)


class _Shared:
    """The one template of this host process, started on first use and again after it died."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: TemplateProcess | None = None
        self.preloads: list[str] = []
        self.starting = False  # a thread is starting the template in the background
        self._starting_lock = threading.Lock()  # not ``lock``: that one is held while a template starts

    def template(self) -> TemplateProcess:
        """The running template (caller holds the lock)."""
        if self.current is None or not self.current.alive:
            self.current = TemplateProcess(self.preloads)
            log().info("worker template started", template_pid=self.current.pid, preloads=self.preloads)
        return self.current

    def start(self) -> None:
        """Start the template on a thread of its own, unless it runs or is starting; forks wait for it.

        Never waits for a template that is starting (or a fork): its caller goes on with its own work."""
        with self._starting_lock:
            if self.starting or (self.current is not None and self.current.alive):
                return
            self.starting = True
        threading.Thread(target=self._start, name="template-start", daemon=True).start()

    def _start(self) -> None:
        try:
            with self.lock:
                if self.starting:  # not stopped meanwhile
                    self.template()
        except TemplateUnavailable as exc:  # the first worker start tries again, or starts a fresh interpreter
            log().warning("worker template did not start", reason=str(exc))
        finally:
            self.starting = False

    def stop(self) -> None:
        """Stop the template (once started, if it is starting); the next worker start begins a new one."""
        with self.lock:
            self.starting = False
            if self.current is not None:
                self.current.close()
                self.current = None

    def fork(self, argv: list[str], channel_fd: int, env: dict[str, str]) -> ForkedWorker:
        """Fork a worker; the lock covers only finding (or replacing) the template, not the fork."""
        with self.lock:
            template = self.template()
        try:
            return template.fork(argv, channel_fd, env)
        except _Stale as stale:
            with self.lock:
                if self.current is template:
                    log().info("preloaded file changed: replacing the template", file=str(stale))
                    template.retire()
                    self.current = None
                template = self.template()
        try:
            return template.fork(argv, channel_fd, env)
        except _Stale as again:
            raise TemplateUnavailable(f"preloaded file keeps changing: {again}") from None

    def preload(self, modules: list[str]) -> dict[str, str]:
        with self.lock:
            new = [module for module in modules if module not in self.preloads]
            self.preloads += new
            if self.current is None or not self.current.alive or not new:
                return {}
            return self.current.preload(new)

    def forget(self) -> None:
        """In a forked child of the host: the template is the parent's."""
        self.lock = threading.Lock()
        self._starting_lock = threading.Lock()
        self.starting = False
        if self.current is not None:
            with contextlib.suppress(OSError):
                self.current._requests.close()
                self.current._events.close()
        self.current = None


_shared = _Shared()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_shared.forget)


def module_of(classname: str) -> str:
    """The module part of ``"pkg.mod:Class"`` or ``"pkg.mod.Class"``."""
    return classname.partition(":")[0] if ":" in classname else classname.rpartition(".")[0]


def start() -> None:
    """Start the shared template now, in the background, if it does not run (Linux; else nothing).

    Call it first thing, before your program imports the rest: the template imports zenoh and HEROS
    on one core while your program goes on on the other, and the first worker start only waits
    for what is left. Without it, the template starts when the first sidecar needs a worker.
    """
    if available():
        _shared.start()


def stop() -> None:
    """Stop the shared template, if it runs; its workers live on (they watch the host, not it)."""
    _shared.stop()


def preload(*classnames: str) -> dict[str, str]:
    """Have the shared template import the modules of these classes (now and after it restarts).

    If the template does not run yet, it is started in the background (``start()``) and imports them
    as it starts; their failures are then logged, not returned. Returns the modules that failed to
    import in a running template, with why; workers then import them themselves. A preloaded module
    whose file changes on disk makes the next worker start replace the template.
    """
    if not available():
        return {}
    failed = _shared.preload([module for name in classnames if (module := module_of(name))])
    for module, why in failed.items():
        log().warning("template could not preload", module=module, error=why)
    if classnames:
        start()
    return failed


def fork(argv: list[str], channel_fd: int, env: dict[str, str]) -> ForkedWorker:
    """Fork a worker from the shared template (started, or started again, if need be)."""
    return _shared.fork(argv, channel_fd, env)


def template_pid() -> int | None:
    """The shared template's pid, if it runs."""
    current = _shared.current
    return current.pid if current is not None and current.alive else None


def default_backend(policy: SidecarPolicy) -> ProcessBackend:
    """The template where the policy allows it and the platform supports it, else fresh interpreters."""
    from boss_sidecar._template_backend import TemplateBackend  # noqa: PLC0415 - it needs the supervisor
    from boss_sidecar.supervisor import ProcessBackend  # noqa: PLC0415

    return TemplateBackend() if policy.worker_template and available() else ProcessBackend()


def __getattr__(name: str) -> Any:
    """``TemplateBackend`` is imported on first use: it needs the supervisor; starting the template does not."""
    if name == "TemplateBackend":
        from boss_sidecar._template_backend import TemplateBackend  # noqa: PLC0415 - needs the supervisor

        return TemplateBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ForkedWorker",
    "TemplateBackend",
    "TemplateUnavailable",
    "default_backend",
    "preload",
    "start",
    "stop",
    "template_pid",
]
