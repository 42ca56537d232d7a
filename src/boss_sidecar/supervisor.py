"""Supervises one worker process: spawn, readiness, heartbeats, restart policy, stop escalation.

A worker is a fresh interpreter (``python -m boss_sidecar.worker``), or a fork of the template
process (``template.TemplateBackend``, never a fork of the host), talking over a private socketpair.
One monitor thread waits for the channel to end and applies the restart policy; one heartbeat
thread (``_heartbeat.HeartbeatWatch``) pings the worker and kills it when it hangs or breaks its limits.
The worker process and its channel are an ``Incarnation`` (``_incarnation``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from boss_sidecar._heartbeat import HeartbeatWatch
from boss_sidecar._incarnation import Incarnation, ProcessBackend, spawn_incarnation
from boss_sidecar._restart_budget import RestartBudget
from boss_sidecar.errors import CallTimeout, SidecarCrashed, SidecarError, SidecarUnavailable
from boss_sidecar.health import Health
from boss_sidecar.logs import get_logger
from boss_sidecar.policy import SidecarPolicy
from boss_sidecar.rpc import Endpoint
from boss_sidecar.states import ACTIVE_STATES, SidecarState, StateChange, StateMachine
from boss_sidecar.stopping import describe_exit, terminate

S = SidecarState
_log = get_logger("boss_sidecar.supervisor")
_FORKED_REASON = "this is a forked child: the worker belongs to the parent process; make a new Sidecar here"


@dataclass(frozen=True)
class _RestartRequest:
    reason: str
    stop_timeout: float


class _Superseded(SidecarUnavailable):
    """A start or restart cut short by stop(): its worker is killed; not a failure of the sidecar."""


class Supervisor:
    """Runs and restarts the worker of one sidecar.

    ``target`` is the host object the worker may call (samples, logs, reverse calls);
    ``prepare(endpoint, deadline)`` runs on every new worker before it counts as RUNNING (session,
    replay), within the monotonic ``deadline``.

    One worker at a time, whatever the interleaving: ``_spawn`` is the only place a worker is born,
    one spawn at a time, only once the previous worker is gone, and only for the current *run*.
    ``start()`` and ``stop()`` begin a new run; threads and launches of an older run stand down.
    Within a run only the monitor thread replaces workers (after a death or for ``restart()``),
    so two restarts never overlap and every state change of a run comes from one thread.
    """

    def __init__(
        self,
        name: str,
        policy: SidecarPolicy,
        *,
        target: object,
        prepare: Callable[[Endpoint, float], None],
        backend: ProcessBackend | None = None,
        host_health: Callable[[], tuple[tuple[str, ...], int]] | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self._target = target
        self._prepare = prepare
        self._host_health = host_health
        """The host side's part of health(): stuck callbacks and dropped samples."""
        self._backend = backend or ProcessBackend()
        self._log = _log.bind(sidecar=name)
        self._machine = StateMachine(self._log)
        self._cond = self._machine.condition
        self._current: Incarnation | None = None
        self._incarnations = 0
        self._budget = RestartBudget(policy, self._backend.now)
        self._restarts = 0
        self._last_exit: str | None = None
        self._run = 0
        """Bumped by start() and stop(): a thread or launch of an older run does nothing more."""
        self._spawning = False
        self._restart_wanted: _RestartRequest | None = None
        self._last_failure: tuple[int, str] | None = None
        """(incarnation, reason) of the last launch that failed, for restart() to report."""
        self._stoppers = 0
        """stop() calls running now; STOPPING with none means an interrupted stop (start() finishes it)."""
        self._restart_hooks: list[Callable[[int, str], None]] = []
        self._monitor: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._heartbeats = HeartbeatWatch(
            policy, self._cond, ended=lambda run: run != self._run, running=self._running_worker, kill=self.kill_hung
        )
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
        """Start the worker and wait until it is ready; raises (and FAILED) if it cannot start.

        After an interrupted stop() (still STOPPING, no stop() running) it finishes that stop first.
        """
        with self._cond:
            self._cond.wait_for(lambda: self.state != S.STOPPING or self._stoppers == 0, self.policy.stop_timeout)
            unfinished_stop = self.state == S.STOPPING and self._stoppers == 0
        if unfinished_stop:
            self.stop()
        with self._cond:
            if self.state in ACTIVE_STATES:
                return
            if self.state == S.STOPPING:
                raise SidecarUnavailable(f"{self.name} is stopping")
            self._run += 1
            run = self._run
            self._restart_wanted = None
            self._budget.reset()
            self._machine.change(S.STARTING, "start requested")
        try:
            self._launch(run)
        except _Superseded:
            raise
        except BaseException as exc:
            self._fail_in_run(run, f"start failed: {exc}")
            raise
        self._monitor = threading.Thread(
            target=self._monitor_loop, args=(run,), name=f"{self.name}-monitor", daemon=True
        )
        self._heartbeat = threading.Thread(
            target=self._heartbeats.watch, args=(run,), name=f"{self.name}-heartbeat", daemon=True
        )
        self._monitor.start()
        self._heartbeat.start()

    def _spawn(self, run: int) -> Incarnation:
        """The only place a worker is born: one spawn at a time, never beside a live worker, never
        for a run that stop() ended (a worker born just as stop() came is killed at once)."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._spawning or run != self._run, self.policy.start_timeout):
                raise CallTimeout(f"{self.name}: an earlier worker start did not finish")
            self._check_run(run)
            self._spawning = True
            previous = self._current
        incarnation: Incarnation | None = None
        try:
            if previous is not None:
                self._ensure_gone(previous)
            incarnation = self._new_incarnation()
        finally:
            with self._cond:
                self._spawning = False
                if incarnation is not None:
                    self._current = incarnation
                self._cond.notify_all()
        if run != self._run:
            incarnation.exit_expected = True
            self._kill_now(incarnation)
            self._check_run(run)
        return incarnation

    def _new_incarnation(self) -> Incarnation:
        self._incarnations += 1
        return spawn_incarnation(
            self.name,
            self._incarnations,
            self.policy,
            backend=self._backend,
            make_endpoint=self._make_endpoint,
            log=self._log,
        )

    def _ensure_gone(self, previous: Incarnation) -> None:
        """One worker at a time: the previous one must be gone (killed now if a stop ran out of time)."""
        if previous.process.poll() is None:
            previous.exit_expected = True
            self._backend.kill(previous.process, signal.SIGKILL)
            try:
                previous.process.wait(timeout=self.policy.stop_timeout)
            except subprocess.TimeoutExpired:
                raise SidecarError(
                    f"{self.name}: worker {previous.process.pid} outlived SIGKILL; not starting a second one"
                ) from None
        previous.endpoint.close("worker replaced")

    def _launch(self, run: int, after: str | None = None) -> None:
        """Spawn a worker, wait for its hello, let ``prepare`` set it up, then RUNNING.

        ``after`` is why the previous worker was replaced; RUNNING's reason keeps it for health().
        """
        incarnation = self._spawn(run)
        deadline = incarnation.started + self.policy.start_timeout
        try:
            incarnation.endpoint.wait_peer(self.policy.start_timeout)
            self._check_run(run)
            self._prepare(incarnation.endpoint, deadline)
            if self._backend.now() > deadline:
                raise CallTimeout("deadline passed")
        except BaseException as exc:
            incarnation.exit_expected = True
            self._kill_now(incarnation)
            self._check_run(run)
            if isinstance(exc, CallTimeout):  # a hello, session or replay step that hung: name the bound
                raise CallTimeout(
                    f"{self.name}: worker not ready within {self.policy.start_timeout:g}s ({exc})"
                ) from exc
            raise
        pid = incarnation.process.pid
        with self._cond:
            self._check_run(run)
            incarnation.ready_at = time.monotonic()
            ready = f"worker {pid} ready (incarnation {incarnation.number})"
            self._machine.change(S.RUNNING, ready if after is None else f"{ready}, restarted after: {after}")
        incarnation.log.info("worker ready", seconds=round(self._backend.now() - incarnation.started, 3))

    def _check_run(self, run: int) -> None:
        if run != self._run:
            raise _Superseded(f"{self.name} was stopped while starting")

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
            callers_read=True,  # the host mostly calls (its target only takes the worker's events)
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
    def _monitor_loop(self, run: int) -> None:
        """The one thread that replaces workers in a run: after a death, or when restart() asks."""
        while True:
            with self._cond:
                while run == self._run and self._restart_wanted is None and not self._current_ended():
                    self._cond.wait()
                if run != self._run:
                    return
                incarnation = self._current
                assert incarnation is not None  # a run begins with a worker
                wanted, self._restart_wanted = self._restart_wanted, None
                if wanted is not None:  # still RUNNING: within a run only this thread changes the state
                    incarnation.exit_expected = True
                    self._machine.change(S.STARTING, wanted.reason)
            if wanted is not None:
                self._terminate(incarnation, time.monotonic() + wanted.stop_timeout)
                carry_on = self._replace(run, wanted.reason, requested=True)
            else:
                carry_on = self._recover(run, incarnation)
            if not carry_on:
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
        # The host sends SIGTERM only while it stops a worker, and never reaps such a worker here.
        self._last_exit = describe_exit(incarnation.process.returncode, sigterm_sent=False)
        if incarnation.kill_reason is not None:
            self._last_exit += f" ({incarnation.kill_reason})"
        incarnation.exit_expected = True

    def _recover(self, run: int, incarnation: Incarnation) -> bool:
        """After a worker died: restart per policy; False when supervision ends (stopped, failed, clean exit).

        A clean end is exit status 0 or SIGTERM from outside (as systemd's ``Restart=on-failure``
        counts a SIGTERM as clean): someone asked that worker to go, and on-failure does not fight them.
        """
        self._reap(incarnation)
        reason = incarnation.kill_reason or f"worker {self._last_exit}"
        code = incarnation.process.returncode
        clean = incarnation.kill_reason is None and code in (0, -signal.SIGTERM)
        self._budget.ran_stably(incarnation.started)
        incarnation.log.warning("worker ended", reason=reason)
        with self._cond:
            if run != self._run:
                return False
            if self.policy.restart == "never" or (clean and self.policy.restart == "on-failure"):
                final = S.STOPPED if clean else S.FAILED
                self._machine.change(final, f"{reason}; restart policy is {self.policy.restart}")
                return False
        return self._replace(run, reason)

    def _replace(self, run: int, reason: str, *, requested: bool = False) -> bool:
        """Start workers until one is ready, under the policy's backoff and intensity limit.

        A requested restart makes its first attempt at once (state STARTING already); every further
        attempt, and every attempt after a death, counts towards ``max_restarts``. A replay that
        times out is a failed attempt like any other.
        """
        attempt_now = requested
        while True:
            if not attempt_now and not self._wait_backoff(run, reason):
                return False
            attempt_now = False
            try:
                self._launch(run, after=reason)
            except Exception as exc:
                if run != self._run:
                    return False
                reason = f"restart failed: {exc}"
                with self._cond:
                    self._last_failure = (self._incarnations, reason)
                    self._cond.notify_all()
                continue
            self._restarts += 1
            self._run_restart_hooks(reason)
            return True

    def _wait_backoff(self, run: int, reason: str) -> bool:
        """BACKOFF for the policy's delay, then STARTING; False (and FAILED) past the intensity limit."""
        recent = self._budget.recent()
        window = self.policy.restart_window
        with self._cond:
            if run != self._run:
                return False
            if recent >= self.policy.max_restarts:
                self._machine.change(S.FAILED, f"gave up: {recent} restarts within {window:g}s; last: {reason}")
                return False
            delay = self._budget.next_delay()
            self._machine.change(S.BACKOFF, f"{reason}; restarting in {delay:.2f}s")
            self._cond.wait_for(lambda: run != self._run, timeout=delay)
            if run != self._run:
                return False
            self._budget.record()
            self._machine.change(S.STARTING, f"restart after: {reason}")
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

    # ----------------------------------------------------------------- stop and restart
    def stop(self, timeout: float | None = None) -> None:
        """Stop the worker within ``timeout``: ask politely, then SIGTERM, then SIGKILL (see stopping.py).

        Safe to call again after it was interrupted (Ctrl-C): the second call finishes the job.
        """
        seconds = self.policy.stop_timeout if timeout is None else timeout
        deadline = time.monotonic() + seconds
        with self._cond:
            if self.state == S.STOPPED:
                return
            self._run += 1  # every thread and launch of the earlier run stands down
            self._restart_wanted = None
            self._cond.notify_all()
            if self.state != S.STOPPING:
                self._machine.change(S.STOPPING, "stop requested")
            self._stoppers += 1
        try:
            with self._cond:  # a worker being born now is stopped too: wait for its birth (bounded)
                self._cond.wait_for(lambda: not self._spawning, max(0.0, deadline - time.monotonic()))
                current = self._current
                threads = (self._monitor, self._heartbeat)
            if current is not None and self.owned_by_this_process:
                self._terminate(current, deadline)
            for thread in threads:
                if thread is not None and thread is not threading.current_thread():
                    thread.join(max(0.0, deadline - time.monotonic()))
        finally:
            with self._cond:
                self._stoppers -= 1
                self._cond.notify_all()
        with self._cond:
            if self.state == S.STOPPING:
                self._machine.change(S.STOPPED, "stopped")

    def restart(self, reason: str = "restart requested", timeout: float | None = None) -> None:
        """Replace the worker now (stop it within ``timeout``, start a new one) and wait until it is ready.

        While the worker is already being replaced (after a death), this waits for that restart
        instead of starting another. If the new worker's first start fails, this raises that failure
        while the restart policy goes on (backoff, more attempts, FAILED past the intensity limit).
        """
        seconds = self.policy.stop_timeout if timeout is None else timeout
        with self._cond:
            seen = self._incarnations
            state = self.state
            if state == S.RUNNING:
                self._restart_wanted = _RestartRequest(reason, seconds)
                self._cond.notify_all()
            elif state not in (S.STARTING, S.BACKOFF):
                raise SidecarUnavailable(f"{self.name} is {state}: cannot restart")
            need_newer = state == S.RUNNING
            bound = seconds + self.policy.start_timeout + self.policy.backoff_max

            def settled() -> bool:
                failure = self._last_failure
                return (
                    (self.state == S.RUNNING and (self._incarnations > seen or not need_newer))
                    or self.state not in ACTIVE_STATES
                    or (failure is not None and failure[0] > seen)
                )

            if not self._cond.wait_for(settled, bound):
                raise CallTimeout(f"{self.name} not running again within {bound:g}s (state {self.state})")
            if self.state == S.RUNNING:
                return
            failure = self._last_failure
            if failure is not None and failure[0] > seen:
                raise SidecarError(f"{self.name}: {failure[1]}")
            raise SidecarUnavailable(f"{self.name} is {self.state}: {self.reason}")

    def _fail_in_run(self, run: int, reason: str) -> None:
        """FAILED after a start that did not work, unless a stop() cut it short."""
        with self._cond:
            if run == self._run and self.state in ACTIVE_STATES:
                self._machine.change(S.FAILED, reason)

    def _terminate(self, incarnation: Incarnation, deadline: float) -> None:
        incarnation.exit_expected = True
        terminate(incarnation.process, incarnation.endpoint, deadline, self._backend, incarnation.log)
        self._last_exit = describe_exit(incarnation.process.returncode)
        incarnation.log.info("worker stopped", exit=self._last_exit)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's channel without touching the parent's worker."""
        current = self._current
        if current is not None:
            with contextlib.suppress(OSError):
                current.endpoint.abandon()

    # ----------------------------------------------------------------- health
    def health(self) -> Health:
        with self._cond:  # one snapshot: a whole restart can run between two unguarded reads
            current, state, reason = self._current, self.state, self.reason
            incarnation, restarts, last_exit = self._incarnations, self._restarts, self._last_exit
        alive = current is not None and current.process.returncode is None and self.owned_by_this_process
        reading = current.probe.read() if current is not None and alive else None
        now = time.monotonic()
        heartbeat_age = None
        if current is not None and current.heartbeat_at is not None:
            heartbeat_age = now - current.heartbeat_at
        overdue = self._heartbeats.overdue(current, now) if state == S.RUNNING and alive else None
        stuck, dropped = self._host_health() if self._host_health is not None else ((), 0)
        return Health(
            name=self.name,
            state=str(state),
            healthy=state == S.RUNNING and alive and overdue is None,
            reason=reason if overdue is None else overdue,
            pid=current.process.pid if current is not None and alive else None,
            incarnation=incarnation,
            uptime=now - current.started if current is not None and alive else None,
            restarts=restarts,
            last_exit=last_exit,
            rss_bytes=reading.rss_bytes if reading else None,
            cpu_percent=reading.cpu_percent if reading else None,
            threads=reading.threads if reading else None,
            open_fds=reading.open_fds if reading else None,
            heartbeat_rtt=current.heartbeat_rtt if current is not None else None,
            heartbeat_age=heartbeat_age,
            stuck_callbacks=stuck,
            dropped_samples=dropped,
        )

    def _running_worker(self) -> Incarnation | None:
        """The current worker while RUNNING (for the heartbeat watch; called under the condition)."""
        return self._current if self.state == S.RUNNING else None


__all__ = ["Incarnation", "ProcessBackend", "SidecarCrashed", "Supervisor"]
