"""The template can start before the host imports the rest: ``template.start()`` needs only the
standard library, and the package imports its names on first use."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from boss_sidecar.testing import peer_config, wait_until
from peers.fault_support import BOUND

HOST = Path(__file__).parent / "peers" / "template_start_host.py"
HEAVY = ("structlog", "boss_sidecar.launcher", "boss_sidecar.sidecar", "boss_sidecar.supervisor")
CLI = shutil.which("boss-sidecar", path=str(Path(sys.executable).parent)) or "boss-sidecar"


def _fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter; its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=BOUND, check=True)
    return done.stdout


def test_a_template_started_first_runs_before_the_host_imports_the_rest_and_forks_its_first_worker() -> None:
    """``template.start()`` starts the template in the background while the host has imported neither
    structlog nor the supervisor; the host's first sidecar gets a worker forked from that template."""
    done = subprocess.run([sys.executable, str(HOST)], capture_output=True, text=True, timeout=BOUND, check=True)
    seen = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert seen["imported"] == []
    assert seen["forked_by"] == seen["early"]


def test_importing_the_package_imports_its_names_on_first_use() -> None:
    """``import boss_sidecar`` loads no submodule; every public name still resolves, to its module's object."""
    code = (
        "import sys, boss_sidecar\n"
        "print(sorted(m for m in sys.modules if m.startswith('boss_sidecar.')))\n"
        "from boss_sidecar import *\n"
        "from boss_sidecar.sidecar import Sidecar as S\n"
        "assert Sidecar is S is boss_sidecar.Sidecar\n"
        "assert all(hasattr(boss_sidecar, name) for name in boss_sidecar.__all__)\n"
        "assert set(boss_sidecar.__all__) <= set(dir(boss_sidecar))\n"
        "try:\n"
        "    boss_sidecar.NoSuchName\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    lines = _fresh(code).splitlines()
    assert lines == ["[]", "module 'boss_sidecar' has no attribute 'NoSuchName'"]


def test_a_launcher_whose_sidecars_all_start_fresh_interpreters_keeps_no_template(tmp_path: Path) -> None:
    """The launcher starts the template before it checks its config; when no sidecar of the config
    forks from it, it is stopped: once the sidecar runs, the launcher has no template child."""
    (tmp_path / "fresh.json5").write_text(json.dumps(peer_config()))
    (tmp_path / "fresh.toml").write_text('[sidecars.fresh]\nworker_template = false\nzenoh = "fresh.json5"\n')
    control = str(tmp_path / "control.sock")
    launcher = subprocess.Popen(
        [CLI, "run", str(tmp_path / "fresh.toml"), "--socket", control],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        healthy = [CLI, "health", "--socket", control, "--timeout", "5"]
        wait_until(lambda: subprocess.run(healthy, check=False, capture_output=True, timeout=BOUND).returncode == 0)
        children = [" ".join(child.cmdline()) for child in psutil.Process(launcher.pid).children()]
        assert any("boss_sidecar.worker" in child for child in children), children
        assert not any("boss_sidecar.worker.template" in child for child in children), children
    finally:
        launcher.terminate()
        launcher.wait(BOUND)


def test_boss_sidecar_command_imports_no_launcher_before_it_starts_the_template() -> None:
    """``boss-sidecar run`` and ``boss`` start the template before anything heavy is imported: the
    command's module imports neither structlog nor the launcher, the sidecar or the supervisor."""
    code = "import sys, boss_sidecar.cli\nprint(sorted(m for m in sys.modules if m in " + repr(HEAVY) + "))\n"
    assert _fresh(code).splitlines() == ["[]"]


def test_starting_the_template_never_waits_for_one_that_is_starting() -> None:
    """``template.start()`` returns at once while another thread holds the template (starting one, or
    forking): the launcher goes on with its own start meanwhile."""
    code = (
        "import threading\n"
        "from boss_sidecar import template\n"
        "template._shared.lock.acquire()\n"
        "starter = threading.Thread(target=template.start)\n"
        "starter.start()\n"
        f"starter.join({BOUND})\n"
        "print('waited' if starter.is_alive() else 'returned')\n"
        "template._shared.lock.release()\n"
        "template.stop()\n"
    )
    assert _fresh(code).splitlines() == ["returned"]


def test_a_malformed_command_line_is_reported_by_the_command_s_own_parser() -> None:
    """Finding the command word early does not change what a user sees for a bad command line:
    the usage names the commands, and the error names the option."""
    done = subprocess.run([CLI, "--log-level"], capture_output=True, text=True, timeout=BOUND, check=False)
    assert done.returncode == 2
    assert "COMMAND ..." in done.stderr and "argument --log-level: expected one argument" in done.stderr
