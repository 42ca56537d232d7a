"""The zenoh benchmark script runs end to end (tiny counts; no figure is judged)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "scripts" / "bench_zenoh.py"


def test_bench_quick_run_prints_every_figure_with_its_ratio() -> None:
    """``bench_zenoh.py --quick`` prints sidecar, in-process and ratio for each rate, the bare relay's
    64 KiB delivery against both, and the restart ratio."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=120, check=True
    )
    lines = done.stdout.splitlines()
    for label in ("put 64 B", "put 64 KiB", "delivery 64 B", "delivery 64 KiB", "end to end 64 B"):
        (line,) = [line for line in lines if line.strip().startswith(f"{label} (")]
        sidecar, inprocess, ratio = (float(word) for word in line.split(")")[1].split()[:3])
        assert sidecar > 0 and inprocess > 0 and ratio > 0, line
    (line,) = [line for line in lines if line.strip().startswith("delivery 64 KiB, relay")]
    relay, inprocess, ratio = (float(word) for word in line.split("relay")[1].split()[:3])
    assert relay > 0 and inprocess > 0 and ratio > 0, line
    (line,) = [line for line in lines if line.strip().startswith("ratio delivery 64 KiB sidecar/relay")]
    assert float(line.split()[-1]) > 0, line
    assert any(line.strip().startswith("ratio restart/cold") for line in lines), done.stdout
    assert any(line.startswith("goals ") for line in lines), done.stdout
