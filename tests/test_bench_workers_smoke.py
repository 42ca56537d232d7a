"""The worker-cost benchmark script runs end to end (two workers, one run; no figures are judged)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "scripts" / "bench_workers.py"


def test_bench_workers_quick_run_measures_boss_and_boss_sidecar_boss_both_ways() -> None:
    """``bench_workers.py --quick`` runs ``boss`` and ``boss-sidecar boss`` (template, and fresh workers
    through a ``[boss]`` config), sees every HERO answer, a killed HERO worker answer again, and prints every ratio."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=300, check=True
    )
    lines = done.stdout.splitlines()
    for system in ("BOSS", "boss-sidecar (template)", "boss-sidecar (fresh)"):
        rows = [line.split() for line in lines if line.startswith(system)]
        assert len(rows) == 1, done.stdout
        assert rows[0][-7] == "2", done.stdout  # both HEROs answered
        main_cpu, template_cpu, workers_cpu = map(float, rows[0][-1].split("/"))
        assert main_cpu > 0 and workers_cpu > 0, done.stdout  # CPU time of each role was read
        assert (template_cpu > 0) == (system == "boss-sidecar (template)"), done.stdout
        if system != "BOSS":
            assert rows[0][-2] != "-", done.stdout  # the killed HERO answered again
    ratios = ("PSS per worker sidecar/BOSS", "time until every HERO answers", "restart after kill -9", "CPU seconds")
    for ratio in ratios:
        assert any(ratio in line for line in lines), done.stdout
    assert len([line for line in lines if line.startswith("bare start:")]) == 5, done.stdout
