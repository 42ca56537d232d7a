"""Supervises one worker process: spawn, readiness, heartbeats, restart policy, stop escalation.

A worker is a fresh interpreter (``python -m boss_sidecar.worker``), or a fork of the template
process (``template.TemplateBackend``, never a fork of the host), talking over a private socketpair.
One monitor thread waits for the channel to end and applies the restart policy; one heartbeat
thread pings the worker and kills it when it hangs or breaks its limits.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import structlog

from boss_sidecar._process import WorkerProcess, worker_environment
from boss_sidecar.errors import CallTimeout, SidecarCrashed, SidecarError, SidecarUnavailable
from boss_sidecar.health import Health, ProcessProbe
from boss_sidecar.policy import SidecarPolicy
from boss_sidecar.rpc import Endpoint
from boss_sidecar.states import ACTIVE_STATES, SidecarState, StateChange, StateMachine

S = SidecarState
_log = structlog.get_logger("boss_sidecar.supervisor")
_FORKED_REASON = "this is a forked child: the worker belongs to the parent process; make a new Sidecar here"


class ProcessBackend:
    """The side effects of supervision (spawning, signalling, the clock); tests may replace it."""

    def spawn(self, command: list[str], channel_fd: int, env: dict[str, str]) -> WorkerProcess:
        # Its own process group: if the host dies while the worker is stopped (SIGSTOP, a debugger),
        # the orphaned group gets SIGHUP and SIGCONT from the kernel, so the worker cannot linger.
        return subprocess.Popen(
            command, pass_fds=[channel_fd], env=env, stdin=subprocess.DEVNULL, close_fds=True, process_group=0
        )

    def kill(self, process: WorkerProcess, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)

    def now(self) -> float:
        return time.monotonic()


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class Incarnation:
    """One worker process and its channel; a restart makes a new one."""

    number: int
    process: WorkerProcess
    endpoint: Endpoint
    started: float
    probe: ProcessProbe
    kill_reason: str | None = None
    exit_expected: bool = False
    cpu_over_since: float | None = None
    heartbeat_rtt: float | None = None
    heartbeat_at: float | None = None
    ready_at: float | None = None
    log: Any = field(default=None)


class Supervisor:
    """Runs and restarts the worker of one sidecar.

    ``target`` is the host object the worker may call (samples, logs, reverse calls);
    ``prepare(endpoint)`` runs on every new worker before it counts as RUNNING (session, replay).
    """

    def __init__(
        self,
        name: str,
        policy: SidecarPolicy,
        *,
        target: object,
        prepare: Callable[[Endpoint], None],
        backend: ProcessBackend | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self._target = target
        self._prepare = prepare
        self._backend = backend or ProcessBackend()
        self._log = _log.bind(sidecar=name)
        self._machine = StateMachine(self._log)
        self._cond = self._machine.condition
        self._current: Incarnation | None = None
        self._incarnations = 0
        self._restart_times: collections.deque[float] = collections.deque()
        self._consecutive_failures = 0
        self._restarts = 0
        self._last_exit: str | None = None
        self._stopping = False
        self._restart_hooks: list[Callable[[int, str], None]] = []
        self._monitor: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._owner_pid = os.getpid()

    # ----------------------------------------------------------------- facts
    @property
    def state(self) -> SidecarState:
        """The machine's state; in a forked child always STOPPED, since the worker is the parent's."""
        return self._machine.state if self.owned_by_this_process else S.STOPPED

    @property
    def reason(self) -> str:
        return self._machine.reason if self.owned_by_this_process else _FORKED_REASON

    @property
    def pid(self) -> int | None:
        current = self._current
        if current is None or current.process.returncode is not None or not self.owned_by_this_process:
            return None
        return current.process.pid

    @property
    def incarnation(self) -> int:
        return self._incarnations

    @property
    def restarts(self) -> int:
        return self._restarts

    @property
    def owned_by_this_process(self) -> bool:
        """False in a forked child: the worker belongs to the parent."""
        return self._owner_pid == os.getpid()

    def on_state_change(self, hook: Callable[[StateChange], None]) -> None:
        self._machine.add_hook(hook)

    def on_restart(self, hook: Callable[[int, str], None]) -> None:
        """``hook(incarnation, reason)`` after each automatic or requested restart."""
        self._restart_hooks.append(hook)

    # ----------------------------------------------------------------- start
    def start(self) -> None:
        """Start the worker and wait until it is ready; raises (and FAILED) if it cannot start."""
        with self._cond:
            if self.state in ACTIVE_STATES:
                return
            if self.state == S.STOPPING:
                raise SidecarUnavailable(f"{self.name} is stopping")
            self._stopping = False
            self._restart_times.clear()
            self._consecutive_failures = 0
            self._machine.change(S.STARTING, "start requested")
        try:
            self._launch()
        except BaseException as exc:
            self._fail_unless_stopping(f"start failed: {exc}")
            raise
        self._monitor = threading.Thread(target=self._monitor_loop, name=f"{self.name}-monitor", daemon=True)
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name=f"{self.name}-heartbeat", daemon=True)
        self._monitor.start()
        self._heartbeat.start()

    def _launch(self, after: str | None = None) -> None:
        """Spawn a worker, wait for its hello, let ``prepare`` set it up, then RUNNING.

        ``after`` is why the previous worker was replaced; RUNNING's reason keeps it for health().
        """
        parent_end, child_end = multiprocessing.Pipe(duplex=True)
        self._incarnations += 1
        number = self._incarnations
        command = [
            sys.executable,
            "-m",
            "boss_sidecar.worker",
            "--fd",
            str(child_end.fileno()),
            "--name",
            self.name,
            "--parent-pid",
            str(os.getpid()),
            "--log-level",
            self.policy.log_level,
            "--stop-bound",
            f"{self.policy.stop_timeout * 0.5:.3f}",
            "--incarnation",
            str(number),
            "--busy-wait",
            repr(self.policy.busy_wait),
        ]
        started = self._backend.now()
        try:
            process = self._backend.spawn(command, child_end.fileno(), worker_environment())
        finally:
            child_end.close()
        log = self._log.bind(worker_pid=process.pid, incarnation=number)
        endpoint = self._make_endpoint(parent_end, number)
        incarnation = Incarnation(number, process, endpoint, started, ProcessProbe(process.pid), log=log)
        with self._cond:
            self._current = incarnation
            self._cond.notify_all()
        deadline = started + self.policy.start_timeout
        try:
            endpoint.wait_peer(self.policy.start_timeout)
            if self._stopping:
                raise SidecarUnavailable(f"{self.name} was stopped while starting")
            self._prepare(endpoint)
            if self._backend.now() > deadline:
                raise CallTimeout(f"{self.name}: worker not ready within {self.policy.start_timeout:g}s")
        except BaseException:
            incarnation.exit_expected = True
            self._kill_now(incarnation)
            raise
        with self._cond:
            if self._stopping:
                raise SidecarUnavailable(f"{self.name} was stopped while starting")
            incarnation.ready_at = time.monotonic()
            ready = f"worker {process.pid} ready (incarnation {number})"
            self._machine.change(S.RUNNING, ready if after is None else f"{ready}, restarted after: {after}")
        log.info("worker ready", seconds=round(self._backend.now() - started, 3))

    def _make_endpoint(self, connection: Connection, number: int) -> Endpoint:
        def closed(_error: SidecarError) -> None:
            with self._cond:
                self._cond.notify_all()

        return Endpoint(
            connection,
            self._target,
            name=f"{self.name}#{number}",
            on_close=closed,
            default_timeout=self.policy.call_timeout,
            busy_wait=self.policy.busy_wait,
        )

    # ----------------------------------------------------------------- calls
    def endpoint(self, timeout: float | None = None) -> Endpoint:
        """The running worker's endpoint; waits through a restart, within ``timeout``."""
        seconds = self.policy.call_timeout if timeout is None else timeout
        deadline = time.monotonic() + seconds
        if not self.owned_by_this_process:  # a forked child: the worker is its parent's
            raise SidecarUnavailable(f"{self.name} belongs to process {self._owner_pid}; make a new Sidecar here")
        with self._cond:
            while True:
                current = self._current
                state = self._machine.state  # ownership was checked once above, not per read
                if state == S.RUNNING and current is not None and not current.endpoint.is_closed:
                    return current.endpoint
                if state not in ACTIVE_STATES:
                    raise SidecarUnavailable(f"{self.name} is {state}: {self._machine.reason}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CallTimeout(f"{self.name} not running within {seconds:g}s (state {state})")
                self._cond.wait(remaining)

    # ----------------------------------------------------------------- failures and restarts
    def _monitor_loop(self) -> None:
        """Wait for the current worker's channel to end; then reap it and apply the restart policy."""
        while True:
            with self._cond:
                while not self._stopping and not self._current_ended():
                    self._cond.wait()
                if self._stopping:
                    return
                incarnation = self._current
            assert incarnation is not None
            self._reap(incarnation)
            if not self._recover(incarnation):
                return

    def _current_ended(self) -> bool:
        current = self._current
        return current is not None and current.endpoint.is_closed and not current.exit_expected

    def _reap(self, incarnation: Incarnation) -> None:
        """Collect the exit status (killing a worker whose channel closed but which lives on)."""
        try:
            incarnation.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self._backend.kill(incarnation.process, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                incarnation.process.wait(timeout=1.0)
        self._last_exit = describe_exit(incarnation.process.returncode)
        if incarnation.kill_reason is not None:
            self._last_exit += f" ({incarnation.kill_reason})"
        incarnation.exit_expected = True

    def _recover(self, incarnation: Incarnation) -> bool:
        """Restart per policy; False when supervision ends (stopped, failed or clean exit)."""
        reason = incarnation.kill_reason or f"worker {self._last_exit}"
        clean = incarnation.kill_reason is None and incarnation.process.returncode == 0
        if self._backend.now() - incarnation.started > self.policy.restart_window:
            self._consecutive_failures = 0  # it ran stably: the next restart is immediate again
        incarnation.log.warning("worker ended", reason=reason)
        with self._cond:
            if self._stopping:
                return False
            if self.policy.restart == "never" or (clean and self.policy.restart == "on-failure"):
                final = S.STOPPED if clean else S.FAILED
                self._machine.change(final, f"{reason}; restart policy is {self.policy.restart}")
                return False
        while True:
            now = self._backend.now()
            window = self.policy.restart_window
            while self._restart_times and now - self._restart_times[0] > window:
                self._restart_times.popleft()
            with self._cond:
                if self._stopping:
                    return False
                if len(self._restart_times) >= self.policy.max_restarts:
                    self._machine.change(
                        S.FAILED,
                        f"gave up: {len(self._restart_times)} restarts within {window:g}s; last: {reason}",
                    )
                    return False
                self._consecutive_failures += 1
                delay = self.policy.backoff(self._consecutive_failures, random.uniform(-1, 1))
                self._machine.change(S.BACKOFF, f"{reason}; restarting in {delay:.2f}s")
                self._cond.wait_for(lambda: self._stopping, timeout=delay)
                if self._stopping:
                    return False
                self._restart_times.append(self._backend.now())
                self._machine.change(S.STARTING, f"restart after: {reason}")
            try:
                self._launch(after=reason)
            except Exception as exc:
                reason = f"restart failed: {exc}"
                continue
            self._restarts += 1
            self._run_restart_hooks(reason)
            return True

    def _run_restart_hooks(self, reason: str) -> None:
        for hook in list(self._restart_hooks):
            try:
                hook(self._incarnations, reason)
            except Exception:
                self._log.exception("restart hook failed")

    def kill_hung(self, incarnation: Incarnation, reason: str) -> None:
        """Kill a worker that stopped answering or broke a limit; the monitor restarts it."""
        if incarnation.kill_reason is None:
            incarnation.kill_reason = reason
            incarnation.log.error("killing worker", reason=reason)
        self._backend.kill(incarnation.process, signal.SIGKILL)

    def _kill_now(self, incarnation: Incarnation) -> None:
        self._backend.kill(incarnation.process, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            incarnation.process.wait(timeout=1.0)
        incarnation.endpoint.close("worker killed")

    # ----------------------------------------------------------------- heartbeats and limits
    def _heartbeat_loop(self) -> None:
        policy = self.policy
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping, timeout=policy.heartbeat_interval)
                if self._stopping:
                    return
                incarnation = self._current
                running = self.state == S.RUNNING
            if incarnation is None or not running or incarnation.endpoint.is_closed:
                continue
            try:
                incarnation.heartbeat_rtt = incarnation.endpoint.ping(timeout=policy.heartbeat_timeout)
                incarnation.heartbeat_at = time.monotonic()
            except CallTimeout:
                self.kill_hung(incarnation, f"hung: no heartbeat answer within {policy.heartbeat_timeout:g}s")
                continue
            except SidecarError:
                continue  # the channel ended: the monitor handles it
            overdue = incarnation.endpoint.peer_overdue
            if overdue:
                self.kill_hung(incarnation, f"hung: {overdue[0]}")
                continue
            self._check_limits(incarnation)

    def _check_limits(self, incarnation: Incarnation) -> None:
        policy = self.policy
        reading = incarnation.probe.read()
        if policy.max_rss_mb is not None and reading.rss_bytes is not None:
            rss_mb = reading.rss_bytes / 1e6
            if rss_mb > policy.max_rss_mb:
                self.kill_hung(incarnation, f"memory limit: RSS {rss_mb:.0f} MB > {policy.max_rss_mb:g} MB")
                return
        if policy.max_cpu_percent is not None and reading.cpu_percent is not None:
            now = time.monotonic()
            if reading.cpu_percent <= policy.max_cpu_percent:
                incarnation.cpu_over_since = None
            elif incarnation.cpu_over_since is None:
                incarnation.cpu_over_since = now
            elif now - incarnation.cpu_over_since >= policy.cpu_window:
                self.kill_hung(
                    incarnation,
                    f"CPU limit: above {policy.max_cpu_percent:g}% for {policy.cpu_window:g}s",
                )

    # ----------------------------------------------------------------- stop and restart
    def request_stop(self, timeout: float | None = None) -> None:
        """BOSS's ``_rpc_stop``: ask the worker to release zenoh and exit 0 (no escalation)."""
        current = self._current
        if current is None or current.endpoint.is_closed:
            return
        current.exit_expected = True
        with contextlib.suppress(SidecarError):
            current.endpoint.request_stop("stop requested by host", timeout=timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the worker within ``timeout``: ask politely, then SIGTERM, then SIGKILL."""
        seconds = self.policy.stop_timeout if timeout is None else timeout
        deadline = time.monotonic() + seconds
        with self._cond:
            if self.state in (S.STOPPED, S.STOPPING):
                return
            self._stopping = True
            self._machine.change(S.STOPPING, "stop requested")
            current = self._current
        if current is not None and self.owned_by_this_process:
            self._terminate(current, deadline)
        for thread in (self._monitor, self._heartbeat):
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._machine.change(S.STOPPED, "stopped")

    def restart(self, reason: str = "restart requested", timeout: float | None = None) -> None:
        """Replace the worker now (stop it within ``timeout``, start a new one)."""
        seconds = self.policy.stop_timeout if timeout is None else timeout
        with self._cond:
            current = self._current
            if self.state != S.RUNNING or current is None:
                raise SidecarUnavailable(f"{self.name} is {self.state}: cannot restart")
            current.exit_expected = True
            self._machine.change(S.STARTING, reason)
        self._terminate(current, time.monotonic() + seconds)
        try:
            self._launch(after=reason)
        except BaseException as exc:
            self._fail_unless_stopping(f"restart failed: {exc}")
            raise
        self._restarts += 1
        self._run_restart_hooks(reason)

    def _fail_unless_stopping(self, reason: str) -> None:
        """FAILED after a start or restart that did not work, unless a stop() cut it short (then STOPPING)."""
        with self._cond:
            if not self._stopping:
                self._machine.change(S.FAILED, reason)

    def _terminate(self, incarnation: Incarnation, deadline: float) -> None:
        """Escalate inside the deadline: stop request, SIGTERM, SIGKILL. Always returns in time."""
        incarnation.exit_expected = True
        process, log = incarnation.process, incarnation.log

        def remaining(share: float) -> float:
            return max(0.0, (deadline - time.monotonic()) * share)

        def exited(within: float) -> bool:
            try:
                process.wait(timeout=within)
            except subprocess.TimeoutExpired:
                return False
            return True

        if process.returncode is None and not incarnation.endpoint.is_closed:
            polite = remaining(0.5)
            with contextlib.suppress(SidecarError):
                incarnation.endpoint.request_stop("stop requested by host", timeout=polite)
        if not exited(remaining(0.5)):
            log.warning("worker did not stop when asked; sending SIGTERM")
            self._backend.kill(process, signal.SIGTERM)
            if not exited(remaining(0.5)):
                log.warning("worker ignored SIGTERM; sending SIGKILL")
                self._backend.kill(process, signal.SIGKILL)
                exited(max(0.05, remaining(1.0)))
        self._last_exit = describe_exit(process.returncode)
        log.info("worker stopped", exit=self._last_exit)
        incarnation.endpoint.close("worker stopped")

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's channel without touching the parent's worker."""
        current = self._current
        if current is not None:
            with contextlib.suppress(OSError):
                current.endpoint.abandon()

    # ----------------------------------------------------------------- health
    def health(self) -> Health:
        current = self._current
        state = self.state
        alive = current is not None and current.process.returncode is None and self.owned_by_this_process
        reading = current.probe.read() if current is not None and alive else None
        now = time.monotonic()
        heartbeat_age = None
        if current is not None and current.heartbeat_at is not None:
            heartbeat_age = now - current.heartbeat_at
        overdue = self._heartbeat_overdue(current, now) if state == S.RUNNING and alive else None
        return Health(
            name=self.name,
            state=str(state),
            healthy=state == S.RUNNING and alive and overdue is None,
            reason=self.reason if overdue is None else overdue,
            pid=current.process.pid if current is not None and alive else None,
            incarnation=self._incarnations,
            uptime=now - current.started if current is not None and alive else None,
            restarts=self._restarts,
            last_exit=self._last_exit,
            rss_bytes=reading.rss_bytes if reading else None,
            cpu_percent=reading.cpu_percent if reading else None,
            threads=reading.threads if reading else None,
            open_fds=reading.open_fds if reading else None,
            heartbeat_rtt=current.heartbeat_rtt if current is not None else None,
            heartbeat_age=heartbeat_age,
        )

    def _heartbeat_overdue(self, current: Incarnation | None, now: float) -> str | None:
        """Why a running worker counts as unhealthy before the heartbeat timeout kills it, if it does.

        A beat is due every ``heartbeat_interval``; one missed (silence beyond a second interval,
        or the timeout if shorter) is reported at once, not only when the kill comes.
        """
        if current is None:
            return None
        last = current.heartbeat_at if current.heartbeat_at is not None else current.ready_at
        if last is None:
            return None
        policy = self.policy
        silent = now - last
        if silent <= policy.heartbeat_interval + min(policy.heartbeat_interval, policy.heartbeat_timeout):
            return None
        return f"heartbeat overdue: no answer for {silent:.1f}s (killed after {policy.heartbeat_timeout:g}s)"


__all__ = ["Incarnation", "ProcessBackend", "SidecarCrashed", "Supervisor"]
