"""The declared host-worker API: each operation and event kind is declared once, implemented by the side that
serves it, and named through the declaration wherever it is used (mypy checks the implementations; these
tests check what mypy cannot: that the names and the methods match, and that no call site spells one out)."""

from __future__ import annotations

import ast
import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from boss_sidecar import worker_api
from boss_sidecar._core import _HostServices
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.worker_api import DECLARE, EventKind, HostApi, HostOp, Op, WorkerApi, names

SENDERS = {"request", "arequest", "call", "acall", "_call", "notify", "_Request", "_push", "push", "push_many"}
"""What sends an operation or event, its name first."""
SOURCES = [
    "boss_sidecar._core",
    "boss_sidecar.sidecar",
    "boss_sidecar.async_sidecar",
    "boss_sidecar.worker.service",
    "boss_sidecar.worker.hosting",
    "boss_sidecar.worker.__main__",
]


def _methods(protocol: type) -> set[str]:
    return {name for name, member in vars(protocol).items() if inspect.isfunction(member) and not name.startswith("_")}


def _tree(module: str) -> ast.Module:
    """A module's syntax tree, read from its source (importing the worker's would load zenoh here)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    return ast.parse(Path(spec.origin).read_text())


def test_each_operation_names_a_method_of_the_worker_api_and_each_method_has_one() -> None:
    """``Op``'s values are exactly ``WorkerApi``'s methods, each under its own name in capitals."""
    declared = names(Op)
    assert set(declared.values()) == _methods(WorkerApi)
    assert all(name == value.upper() for name, value in declared.items())


def test_each_event_kind_and_host_operation_names_a_method_of_the_host_api() -> None:
    """What the worker sends the host (events and calls back) are exactly ``HostApi``'s methods."""
    assert set(names(EventKind).values()) | set(names(HostOp).values()) == _methods(HostApi)


def test_every_declaration_kind_has_its_declare_operation() -> None:
    assert set(DECLARE.values()) == {value for value in names(Op).values() if value.startswith("declare_")}


def test_both_sides_implement_their_declared_api() -> None:
    """The worker's service subclasses ``WorkerApi`` and the host's receiver ``HostApi`` (so mypy checks them)."""
    assert HostApi in _HostServices.__mro__
    [service] = [
        node
        for node in _tree("boss_sidecar.worker.service").body
        if isinstance(node, ast.ClassDef) and node.name == "WorkerService"
    ]
    assert [ast.unparse(base) for base in service.bases] == ["WorkerApi"]


@pytest.mark.parametrize("module", SOURCES)
def test_no_call_site_spells_an_operation_or_event_kind_out(module: str) -> None:
    """Requests, events and pushes name what they ask for through the declaration, never as a string literal."""
    spelled = set(names(Op).values()) | set(names(EventKind).values()) | set(names(HostOp).values())
    found = []
    for node in ast.walk(_tree(module)):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
            continue
        called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if called in SENDERS and node.args[0].value in spelled:
            found.append(f"line {node.lineno}: {called}({node.args[0].value!r}, ...)")
    assert found == []


def test_the_declaration_is_host_safe() -> None:
    """The module both sides import names no zenoh."""
    imported = {
        alias.name
        for node in ast.walk(ast.parse(Path(worker_api.__file__).read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    } | {node.module for node in ast.walk(_tree("boss_sidecar.worker_api")) if isinstance(node, ast.ImportFrom)}
    assert not any(name and name.split(".")[0] == "zenoh" for name in imported)


def test_a_hosted_call_is_dispatched_once_straight_to_the_hosted_method(make_sidecar: Callable[..., Sidecar]) -> None:
    """In a real worker the endpoint runs the hosted object's method itself, looked up once: its traceback goes
    from the endpoint to the method, through no ``call_object`` dispatcher."""
    hosted = make_sidecar("dispatch").host("peers.raising_objects:Raiser")
    with pytest.raises(ValueError, match="the instrument refused") as raised:
        hosted.fail()
    remote = "\n".join(raised.value.__notes__)
    assert "in fail" in remote
    assert "call_object" not in remote
