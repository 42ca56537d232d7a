"""Bad input at every boundary: each is a clear error naming the problem, and the sidecar keeps serving.

Random frames on a real worker's channel, oversized messages, arguments, results and exceptions
that do not pickle or unpickle, hosted classes that are missing or fail, invalid key expressions,
invalid zenoh and launcher configurations.
"""

from __future__ import annotations

import ast
import math
import os
import pickle
import re
import struct
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boss_sidecar import (
    ConfigError,
    EncodeError,
    MessageTooLarge,
    ProtocolError,
    RemoteError,
    Sidecar,
    SidecarError,
    SidecarState,
    ZenohError,
)
from boss_sidecar.config import ConfigProblems, parse_config
from boss_sidecar.rpc import DEFAULT_MAX_MESSAGE_BYTES
from boss_sidecar.testing import peer_config
from peers.fault_support import RestartWatch, workers_of

ECHO = "peers.fault_objects:FaultEcho"


class Serving:
    """One sidecar shared by this module's tests, with a hosted echo object and a restart watch."""

    def __init__(self) -> None:
        self.sidecar = Sidecar("fault-input", peer_config(), heartbeat_interval=0.2).start()
        self.watch = RestartWatch()
        self.sidecar.on_restart(self.watch)
        self.echo = self.sidecar.host(ECHO)
        self.pid = self.sidecar.pid

    def assert_still_serving(self) -> None:
        """The same worker (no restart) answers a call with its own token."""
        assert self.echo.echo("still serving") == "still serving"
        assert (self.sidecar.pid, self.watch.count) == (self.pid, 0)

    def send_raw(self, frame: bytes) -> None:
        """Write one frame to the worker's channel, past every check of the host's encoder."""
        self.sidecar._supervisor.endpoint()._writer.send([frame], len(frame))


@pytest.fixture(scope="module")
def serving() -> Iterator[Serving]:
    shared = Serving()
    yield shared
    shared.sidecar.stop(timeout=10)


# ----------------------------------------------------------------- the channel itself
def _worker_api() -> frozenset[str]:
    """Public names of the worker's service (read from its source: importing it would load zenoh)."""
    import importlib.util

    spec = importlib.util.find_spec("boss_sidecar.worker.service")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    service = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "WorkerService")
    names = {node.name for node in service.body if isinstance(node, ast.FunctionDef)}
    return frozenset(name for name in names | {"name"} if not name.startswith("_"))


WORKER_API = _worker_api()
NASTY_NAMES = ["_session", "__class__", "__init__", "__dict__", "__reduce__", "_endpoint", "info.__globals__", "", "1x"]
TYPES = ["c", "g", "s", "r", "e", "hello", "ping", "pong", "event"]
"""Every message type but "stop": a well-formed stop request rightly stops the worker."""

values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.binary(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), inner, max_size=3),
        st.builds(ValueError, st.text(max_size=8)),
    ),
    max_leaves=6,
)
names = st.one_of(st.sampled_from(NASTY_NAMES), st.text(max_size=10)).filter(lambda name: name not in WORKER_API)
messages = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(TYPES), st.text(max_size=6), values)},
    optional={
        "id": st.one_of(st.integers(), values),
        "method": st.one_of(names, values),
        "name": st.one_of(names, values),
        "args": values,
        "kwargs": values,
        "value": values,
        "payload": values,
        "error": values,
        "traceback": values,
        "ack": values,
        "timeout": values,
        "version": values,
        "pid": values,
        "sent": values,
        "overdue": values,
        "reason": values,
    },
)
frames = st.one_of(
    messages.map(pickle.dumps),
    values.map(pickle.dumps),
    messages.map(pickle.dumps).flatmap(lambda data: st.integers(0, len(data) - 1).map(lambda cut: data[:cut])),
    st.binary(max_size=64),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(frames, min_size=1, max_size=5))
def test_random_frames_on_a_real_workers_channel_leave_it_serving(serving: Serving, batch: list[bytes]) -> None:
    """Malformed, truncated, unknown and random frames: the worker logs them and keeps serving, unrestarted."""
    for frame in batch:
        serving.send_raw(frame)
    serving.assert_still_serving()


def test_oversized_argument_is_refused_before_anything_is_sent(serving: Serving) -> None:
    """An argument over the message limit: MessageTooLarge naming both sizes; nothing reaches the worker."""
    with pytest.raises(MessageTooLarge, match=rf"exceeds the limit of {DEFAULT_MAX_MESSAGE_BYTES} bytes"):
        serving.echo.echo(b"x" * (DEFAULT_MAX_MESSAGE_BYTES + 1))
    serving.assert_still_serving()


def test_oversized_result_is_an_error_naming_the_result(serving: Serving) -> None:
    """A result over the limit: the worker sends MessageTooLarge for it instead."""
    with pytest.raises(MessageTooLarge, match=r"result of call 'big' of FaultEcho \(hosted #\d+\).*exceeds the limit"):
        serving.echo.big(DEFAULT_MAX_MESSAGE_BYTES + 1)
    serving.assert_still_serving()


def test_oversized_frame_arriving_at_the_worker_is_skipped(serving: Serving) -> None:
    """A request over the limit written past the host's check: the worker skips it and keeps serving."""
    request = {"id": 1, "type": "c", "method": "info", "args": (b"x" * DEFAULT_MAX_MESSAGE_BYTES,), "kwargs": {}}
    serving.send_raw(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
    serving.assert_still_serving()


def test_corrupt_framing_restarts_the_worker_and_the_sidecar_serves_on(make_sidecar: Callable[..., Sidecar]) -> None:
    """A frame header no sender makes (negative length): the channel cannot resync, so the worker is
    replaced (not stopped: exiting on a broken channel counts as a failure) and calls work again."""
    sidecar = make_sidecar("fault-framing")
    watch = RestartWatch()
    sidecar.on_restart(watch)
    echo = sidecar.host(ECHO)
    os.write(sidecar._supervisor.endpoint()._connection.fileno(), struct.pack("!i", -5))
    assert watch.next_reason() == "worker exited with code 3"
    assert echo.echo("again") == "again"


# ----------------------------------------------------------------- what does not pickle
def test_unpicklable_argument_is_an_encode_error_naming_it(serving: Serving) -> None:
    """A lock as argument: EncodeError naming what cannot be pickled; nothing was sent."""
    with pytest.raises(EncodeError, match=r"cannot be pickled.*'_thread.lock'"):
        serving.echo.echo(threading.Lock())
    serving.assert_still_serving()


@pytest.fixture
def host_only(monkeypatch: pytest.MonkeyPatch) -> Any:
    """An instance of a class from a module that exists only in this (host) process."""
    module = types.ModuleType("fault_host_only")
    module.HostOnly = type("HostOnly", (), {"__module__": "fault_host_only"})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fault_host_only", module)
    return module.HostOnly()


def test_argument_the_worker_cannot_unpickle_is_a_protocol_error(serving: Serving, host_only: Any) -> None:
    """The worker cannot rebuild an argument: ProtocolError naming the missing module, for this call."""
    with pytest.raises(ProtocolError, match=r"request could not be unpickled.*fault_host_only"):
        serving.echo.echo(host_only)
    with pytest.raises(ProtocolError, match=r"fault_host_only"):
        serving.echo.echo("id", 12345, host_only)  # an id-like pair among the arguments
    serving.assert_still_serving()


def test_unpicklable_result_is_an_encode_error_naming_the_result(serving: Serving) -> None:
    """A method returns a lock: EncodeError naming the result, raised in the host."""
    with pytest.raises(EncodeError, match=r"of call 'make_lock' of FaultEcho .*result \(lock\) cannot be pickled"):
        serving.echo.make_lock()
    serving.assert_still_serving()


def test_exception_that_cannot_be_pickled_arrives_as_remote_error(serving: Serving) -> None:
    """The method raises an exception holding a lock: RemoteError with type, message and traceback."""
    with pytest.raises(RemoteError) as raised:
        serving.echo.raise_unpicklable("the message")
    error = raised.value
    assert error.type_name == "peers.fault_objects.HoldsLock"
    assert error.message == "the message"
    assert "raise_unpicklable" in error.traceback
    serving.assert_still_serving()


def test_exception_the_host_cannot_unpickle_arrives_as_remote_error(serving: Serving) -> None:
    """An exception class that exists only in the worker: RemoteError with its type, message and traceback."""
    with pytest.raises(RemoteError) as raised:
        serving.echo.raise_worker_only("only there")
    error = raised.value
    assert (error.type_name, error.message) == ("fault_worker_only.WorkerOnlyError", "only there")
    assert "raise_worker_only" in error.traceback
    serving.assert_still_serving()


def test_zenoh_error_escaping_a_hosted_method_is_a_zenoh_error_and_zenoh_stays_out_of_the_host(
    serving: Serving,
) -> None:
    """zenoh's ZError raised by a hosted method (a HERO whose session closed while it was built): a
    ZenohError with zenoh's text and the worker's traceback; unpickling it did not import zenoh here."""
    with pytest.raises(ZenohError) as raised:
        serving.echo.raise_zenoh_error("session closed")
    assert str(raised.value) == "ZError: session closed"
    (note,) = raised.value.__notes__
    assert "remote traceback" in note and "raise_zenoh_error" in note
    assert "zenoh" not in sys.modules
    serving.assert_still_serving()


@pytest.mark.parametrize(
    ("method", "refers_to"),
    [("zenoh_error_as_value", "zenoh.ZError"), ("worker_function", "boss_sidecar.worker.convert.qos")],
)
def test_result_that_would_import_zenoh_in_the_host_is_an_encode_error_naming_it(
    serving: Serving, method: str, refers_to: str
) -> None:
    """A result referring to zenoh or to the worker's code would import zenoh where it is unpickled:
    EncodeError naming the call and what it refers to; the host never imports zenoh."""
    expected = rf"result of call '{method}' of FaultEcho .*cannot travel: {re.escape(refers_to)} would import"
    with pytest.raises(EncodeError, match=expected):
        getattr(serving.echo, method)()
    assert "zenoh" not in sys.modules
    serving.assert_still_serving()


def test_result_that_only_mentions_zenoh_travels_and_the_check_runs_none_of_its_code(serving: Serving) -> None:
    """Text that names zenoh is no reference to it: the result arrives whole, and the worker's check
    built none of its objects (a ``__setstate__`` with side effects never ran there)."""
    from peers.fault_objects import CountsUnpickling

    value = serving.echo.mentions_zenoh()
    assert value["encoding"] == "zenoh/bytes"
    assert isinstance(value["marker"], CountsUnpickling) and value["marker"].note == "made in the worker"
    assert serving.echo.unpicklings_here() == 0
    assert "zenoh" not in sys.modules
    serving.assert_still_serving()


# ----------------------------------------------------------------- hosting
@pytest.mark.parametrize(
    ("classname", "expected"),
    [
        ("no_such_module:Thing", r"module 'no_such_module' not importable"),
        ("peers.fault_objects:NoSuchClass", r"'peers.fault_objects' has no 'NoSuchClass'"),
        ("peers.fault_objects:FOREVER", r"it is a float, not a class"),
        ("NoModule", r"must look like 'package.module:Class'"),
    ],
)
def test_hosting_what_is_not_a_class_names_what_is_missing(serving: Serving, classname: str, expected: str) -> None:
    """A missing module or class, or not a class: ConfigError naming it."""
    with pytest.raises(ConfigError, match=expected):
        serving.sidecar.host(classname)
    serving.assert_still_serving()


def test_class_raising_in_init_reraises_there_and_is_not_replayed(serving: Serving) -> None:
    """__init__ raises: the same exception in the host with the worker's traceback; nothing is kept."""
    hosted_before = dict(serving.sidecar.core.hosted)
    with pytest.raises(ValueError, match="refusing to start: no disk") as raised:
        serving.sidecar.host("peers.fault_objects:RaisesInInit", "no disk")
    (note,) = raised.value.__notes__
    assert "remote traceback" in note and "fault_objects.py" in note and "in __init__" in note
    assert serving.sidecar.core.hosted == hosted_before  # not in the ledger: a restart will not retry it
    serving.assert_still_serving()


# ----------------------------------------------------------------- zenoh input
@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", "a?b", "a#b"])
def test_invalid_key_expression_is_refused_in_the_host_naming_it(serving: Serving, key: str) -> None:
    """Obvious mistakes are caught before anything is sent: ValueError quoting the key."""
    sidecar = serving.sidecar
    for attempt in (
        lambda: sidecar.put(key, b"x"),
        lambda: sidecar.subscribe(key, print),
        lambda: sidecar.queryable(key, print),
        lambda: sidecar.liveliness_token(key),
        lambda: sidecar.delete(key),
    ):
        with pytest.raises(ValueError, match="key expression"):
            attempt()
    serving.assert_still_serving()


def test_key_expression_zenoh_refuses_is_a_zenoh_error_and_zenoh_stays_out_of_the_host(serving: Serving) -> None:
    """zenoh's own check (a stray '*'): ZenohError with zenoh's text; the host still never imports zenoh."""
    sidecar = serving.sidecar
    with pytest.raises(ZenohError, match=r"subscribe 'a/b\*c': .*may only be preceded by"):
        sidecar.subscribe("a/b*c", print)
    with pytest.raises(ZenohError, match=r"liveliness token 'a/b\*c'"):
        sidecar.liveliness_token("a/b*c")
    sidecar.put("a/b*c", b"x")
    with pytest.raises(SidecarError, match=r"put 'a/b\*c'"):
        sidecar.flush()
    assert "zenoh" not in sys.modules
    serving.assert_still_serving()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"mode": "bogus"}, r"invalid zenoh configuration: unknown variant `bogus`"),
        ({"mode": "peer", "nosuchkey": 1}, r"invalid zenoh configuration: unknown field `nosuchkey`"),
        ({"mode": "peer", "listen": {"endpoints": "x"}}, r"invalid zenoh configuration: invalid type"),
        ({"mode": "peer", "listen": {"endpoints": ["tcp/127.0.0.1:notaport"]}}, r"open zenoh session: invalid port"),
    ],
)
def test_invalid_zenoh_configuration_fails_the_start_naming_it(config: dict[str, Any], expected: str) -> None:
    """The worker cannot open its session: start raises naming the problem, FAILED, no worker left."""
    sidecar = Sidecar("fault-bad-zenoh", {**config, "scouting": {"multicast": {"enabled": False}}})
    with pytest.raises(SidecarError, match=expected):
        sidecar.start()
    assert sidecar.state == SidecarState.FAILED
    assert sidecar.health().reason.startswith("start failed: ")
    assert workers_of("fault-bad-zenoh") == []
    sidecar.stop()


def test_zenoh_configuration_that_cannot_be_used_is_refused_at_construction(tmp_path: Path) -> None:
    """A missing file or a value JSON cannot carry: ConfigError before any process starts."""
    with pytest.raises(ConfigError, match=r"zenoh configuration file .*missing.json5' does not exist"):
        Sidecar("fault-bad-zenoh", tmp_path / "missing.json5")
    with pytest.raises(ConfigError, match=r"must be JSON-serialisable"):
        Sidecar("fault-bad-zenoh", {"mode": "peer", "when": object()})
    with pytest.raises(ConfigError, match=r"must be a dict, a file path or None, got int"):
        Sidecar("fault-bad-zenoh", 7)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["-m", "--fd", "-", "--", "--name=x y"])
def test_sidecar_names_that_look_like_options_are_only_names(name: str) -> None:
    """A name beginning with '-' reaches the worker as its name, never as an option: the sidecar serves, and
    ps shows the name after ``--`` (a worker forked by the template shows its command line as one title)."""
    sidecar = Sidecar(name, peer_config()).start()
    try:
        assert sidecar.host(ECHO).echo(name) == name
        assert sidecar.pid is not None
        assert " ".join(psutil.Process(sidecar.pid).cmdline()).endswith(f" -- {name}")
        assert sidecar.info()["zid"]
    finally:
        sidecar.stop()


@pytest.mark.parametrize("name", ["a\x00b", "line\nbreak", "\x1b[2J", "\ud800"])
def test_sidecar_names_no_process_can_carry_are_refused_at_construction(name: str) -> None:
    """NUL and other control characters, or text that cannot be encoded: ConfigError from Sidecar(...)."""
    with pytest.raises(ConfigError, match=r"sidecar name"):
        Sidecar(name, peer_config())


# ----------------------------------------------------------------- the launcher's configuration
def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml(str(key))} = {_toml(item)}" for key, item in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    return repr(value)


toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=5,
)
sidecar_keys = st.one_of(
    st.sampled_from(["zenoh", "objects", "restart", "call_timeout", "heartbeat_interval", "max_rss_mb", "log_level"]),
    st.text(max_size=8),
)
launcher_documents = st.dictionaries(
    st.one_of(st.just("sidecars"), st.text(max_size=6)),
    st.dictionaries(st.text(max_size=6), st.dictionaries(sidecar_keys, toml_values, max_size=4), max_size=2),
    max_size=2,
)


@settings(max_examples=200, deadline=None)
@given(document=launcher_documents)
def test_any_launcher_configuration_is_accepted_or_refused_with_named_problems(document: dict[str, Any]) -> None:
    """Random launcher files: a valid config or ConfigProblems, each problem naming the file; nothing else."""
    text = "".join(f"{_toml(key)} = {_toml(value)}\n" for key, value in document.items())
    try:
        config = parse_config(text, "fuzz.toml", Path.cwd(), check_imports=False)
    except ConfigProblems as problems:
        assert problems.problems
        assert all(str(problem).startswith("fuzz.toml") for problem in problems.problems)
        assert str(problems).startswith(f"{len(problems.problems)} error")
    else:
        for spec in config.sidecars.values():  # what is accepted can be waited on
            numbers = [v for v in spec.policy_options().values() if isinstance(v, int | float)]
            assert all(math.isfinite(v) and v <= threading.TIMEOUT_MAX for v in numbers), spec.policy


@pytest.mark.parametrize("value", ["inf", "nan", "1e300", "-1.0"])
def test_endless_or_negative_waits_are_refused_in_a_launcher_file_and_by_sidecar(value: str) -> None:
    """heartbeat_interval = inf (TOML allows it) would kill the heartbeat thread: refused, field named."""
    with pytest.raises(ConfigProblems, match=r"fuzz.toml: \[sidecars.a\] heartbeat_interval: must be"):
        parse_config(f"[sidecars.a]\nheartbeat_interval = {value}\n", "fuzz.toml", Path.cwd(), check_imports=False)
    with pytest.raises(ConfigError, match="heartbeat_interval must be"):
        Sidecar("fault-policy", peer_config(), heartbeat_interval=float(value))


# ----------------------------------------------------------------- the fault list itself
FAULT_TEST_FILES = [
    "test_faults_boss.py",
    "test_faults_callbacks.py",
    "test_faults_chaos.py",
    "test_faults_embedding.py",
    "test_faults_hangs.py",
    "test_faults_host_death.py",
    "test_faults_input.py",
    "test_faults_puts.py",
    "test_faults_races.py",
    "test_faults_template.py",
    "test_security.py",
    "test_testing.py",
]


def test_faults_md_names_every_fault_test() -> None:
    """FAULTS.md names each test of the fault and security files, and nothing else."""
    here = Path(__file__).parent
    tests = {
        f"tests/{name}::{node.name}"
        for name in FAULT_TEST_FILES
        for node in ast.parse((here / name).read_text()).body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
    }
    listed = set(re.findall(r"`(tests/test_\w+\.py::test_\w+)`", (here.parent / "FAULTS.md").read_text()))
    assert len(tests) >= len(FAULT_TEST_FILES)
    assert (sorted(tests - listed), sorted(listed - tests)) == ([], [])
