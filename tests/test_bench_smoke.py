"""The RPC benchmark script runs end to end (tiny counts; no figures are judged)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "scripts" / "bench_rpc.py"


def test_bench_quick_run_prints_every_figure_and_ratio() -> None:
    """``bench_rpc.py --quick`` measures raw pipe, the simplest clients, call and acall, and prints
    the seven ratio lines."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=120, check=True
    )
    lines = done.stdout.splitlines()
    for label in ("raw pipe", "raw pipe, simplest client, 8 threads", "raw pipe, simplest client, 8 tasks"):
        assert any(line.strip().startswith(label) for line in lines), done.stdout
    for label in ("Endpoint.call", "Endpoint.acall"):
        assert any(line.strip().startswith(label) for line in lines), done.stdout
    for ratio in (
        "round trip p50 call",
        "round trip p50 acall",
        "throughput threads",
        "throughput tasks",
        "busy machine p50 call",
        "threads/simplest",
        "tasks/simplest",
    ):
        matching = [line for line in lines if f"ratio {ratio}:" in line]
        assert len(matching) == 1, done.stdout
        assert float(matching[0].split(":", 1)[1].split()[0]) > 0
