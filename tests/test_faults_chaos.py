"""Chaos: the worker is SIGKILLed at random moments while threads and tasks call it and a stream flows."""

from __future__ import annotations

from peers.fault_chaos import ChaosSettings, run_chaos

CI_SETTINGS = ChaosSettings(kills=12, threads=3, tasks=3, seed=20261124)
"""CI-sized; ``scripts/chaos.py`` runs the same with many more kills."""


async def test_calls_end_with_their_own_result_or_a_sidecar_error_through_random_kills() -> None:
    """Every call returns its own token or a SidecarError, none hangs, the stream resumes, no worker is left."""
    report = await run_chaos(CI_SETTINGS)
    assert report.problems(CI_SETTINGS) == [], report
    assert report.calls_ok > 0
    assert report.sigkills >= CI_SETTINGS.kills
    assert len(report.restart_reasons) == CI_SETTINGS.kills
    for reason in report.restart_reasons:
        assert "killed by SIGKILL" in reason or reason.startswith("restart failed:"), reason


LIFECYCLE_ROUNDS = 8
"""CI-sized; ``scripts/chaos.py --lifecycle N`` runs more."""


def test_restart_stop_and_ctrl_c_racing_kills_keep_one_worker_and_never_fail() -> None:
    """restart() right after a kill, two restarts racing a kill, stop() right after a kill, and Ctrl-C during
    stop() of a frozen worker, in random order: never two workers at once, never FAILED, every interrupted
    stop finished by the next, every call its own result or a SidecarError, no worker left."""
    from peers.fault_chaos import run_lifecycle_chaos

    report = run_lifecycle_chaos(LIFECYCLE_ROUNDS, seed=20261204)
    assert report.problems() == [], report
    assert sum(report.rounds.values()) == LIFECYCLE_ROUNDS
    assert report.calls_ok > 0
