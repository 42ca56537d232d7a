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
