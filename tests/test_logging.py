"""boss-sidecar as a guest in a host process: every record through ``logging`` with its fields,
worker records included, and a host's structlog left alone. Real host processes. (A host that
configures nothing sees nothing: test_faults_embedding.py.)"""

from __future__ import annotations

import json
import logging

import pytest

from boss_sidecar.logs import get_logger
from peers.boss_support import hero_environment
from peers.sidecar_support import run_program


def test_a_hosts_own_structlog_configuration_is_left_untouched() -> None:
    """A host that configured structlog for itself gets its own line only, its configuration unchanged."""
    done = run_program("logging_host.py", "structlog")
    assert done.returncode == 0, done.stderr
    assert (done.stdout.splitlines(), done.stderr) == (['{"event": "host line"}'], "")


def test_a_host_with_basic_config_receives_every_record_with_its_fields() -> None:
    """``logging.basicConfig(level=INFO)``: records of host and worker arrive under ``boss_sidecar``
    with sidecar, worker_pid and incarnation as attributes, and read well as plain lines."""
    done = run_program("logging_host.py", "basic")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    pid, records = answer["pid"], answer["records"]
    by_event = {record["event"]: record for record in records}
    ready = by_event["worker ready"]
    assert (ready["logger"], ready["sidecar"], ready["worker_pid"], ready["incarnation"]) == (
        "boss_sidecar.supervisor",
        "embedded",
        pid,
        1,
    )
    opened = by_event["zenoh session open"]  # written in the worker
    assert (opened["logger"], opened["sidecar"], opened["worker_pid"], opened["incarnation"]) == (
        "boss_sidecar.worker",
        "embedded",
        pid,
        1,
    )
    vendor = by_event["vendor says hello"]  # a library of the worker logging through ``logging``
    assert (vendor["level"], vendor["origin"], vendor["sidecar"], vendor["worker_pid"]) == (
        "WARNING",
        "vendor.driver",
        "embedded",
        pid,
    )
    assert by_event["hosted object teardown failed"]["level"] == "WARNING"
    assert by_event["queryable handler raised"]["sidecar"] == "embedded"
    assert all(record["logger"].startswith("boss_sidecar") for record in records)
    assert f"INFO:boss_sidecar.supervisor:worker ready sidecar=embedded worker_pid={pid} incarnation=1" in done.stderr


def test_fields_that_logging_reserves_stay_in_record_fields(caplog: pytest.LogCaptureFixture) -> None:
    """A field named like a LogRecord attribute (``name``, ``message``) cannot break the record."""
    with caplog.at_level(logging.INFO, logger="boss_sidecar"):
        get_logger("boss_sidecar.test").info("odd fields", name="x", message="y", args=3, sidecar="s")
    (record,) = caplog.records
    assert (record.name, record.event, record.sidecar) == ("boss_sidecar.test", "odd fields", "s")  # type: ignore[attr-defined]
    assert record.fields == {"name": "x", "message": "y", "args": 3, "sidecar": "s"}  # type: ignore[attr-defined]
    assert record.getMessage() == "odd fields name=x message=y args=3 sidecar=s"


def test_library_loggers_are_only_under_boss_sidecar() -> None:
    """Every logger the library makes is a ``boss_sidecar.*`` one, covered by its NullHandler."""
    with pytest.raises(ValueError, match="boss_sidecar"):
        get_logger("heros")
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("boss_sidecar").handlers)


def test_a_worker_traceback_reads_as_lines_after_the_message(caplog: pytest.LogCaptureFixture) -> None:
    """A traceback that came as text (from the worker) follows the message on lines of its own."""
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\nValueError: no'
    with caplog.at_level(logging.INFO, logger="boss_sidecar"):
        get_logger("boss_sidecar.worker").error("served work failed", exception=trace, worker_pid=7)
    (record,) = caplog.records
    assert record.getMessage() == f"served work failed worker_pid=7\n{trace}"
    assert record.fields == {"exception": trace, "worker_pid": 7}  # type: ignore[attr-defined]


def test_a_service_building_its_boss_in_python_receives_the_boss_records_with_their_fields() -> None:
    """``boss_sidecar.boss.BOSS`` under ``basicConfig``: the HERO built in its worker and the HERO that would
    not build arrive as ``boss_sidecar`` records naming the HERO, the worker's among them stamped with its pid."""
    done = run_program("logging_boss_host.py", "basic", env=hero_environment())
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    by_event = {record["event"]: record for record in answer["records"]}
    built = by_event["HERO built"]  # written in the HERO's worker
    assert (built["logger"], built["hero"], built["sidecar"], built["worker_pid"]) == (
        "boss_sidecar.worker.heroes",
        "meter",
        "meter",
        answer["pid"],
    )
    up = by_event["HERO up"]
    assert (up["logger"], up["hero"], up["worker_pid"]) == ("boss_sidecar.boss", "meter", answer["pid"])
    failed = by_event["HERO did not come up"]
    assert (failed["level"], failed["hero"]) == ("ERROR", "broken")
    assert all(record["logger"].startswith("boss_sidecar") for record in answer["records"])
    assert "INFO:boss_sidecar.boss:HERO up hero=meter worker_pid=" in done.stderr
