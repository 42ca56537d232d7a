"""Security: only the exposed API runs, the control socket is private, and nothing listens beyond loopback.

Raw Call/GetAttribute/SetAttribute/Event messages name private, dunder and dotted attributes of the
worker, of hosted objects and of exported host objects: each is refused and nothing changes.
"""

from __future__ import annotations

import ipaddress
import os
import select
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from boss_sidecar.control import ControlServer, request
from boss_sidecar.hosted import _id_of
from boss_sidecar.sidecar import Sidecar
from boss_sidecar.testing import free_port, peer_config, wait_until
from peers.fault_support import BOUND

MakeSidecar = Callable[..., Sidecar]
ECHO = "peers.fault_objects:FaultEcho"
UNEXPOSED = [
    "_session",
    "_require_session",
    "_endpoint",
    "_attach",
    "__init__",
    "__class__",
    "__dict__",
    "__reduce_ex__",
    "__getattribute__",
    "info.__globals__",
    "open_session.__func__",
    "",
    "a b",
    "1x",
]
"""Names no message may reach: private, dunder, dotted paths and non-identifiers."""


def test_raw_requests_reach_only_public_names_of_the_worker(make_sidecar: MakeSidecar) -> None:
    """Call, GetAttribute and SetAttribute of unexposed names are refused; one-way ones change nothing."""
    sidecar = make_sidecar("security")
    zid = sidecar.info()["zid"]
    endpoint = sidecar._supervisor.endpoint()
    for name in UNEXPOSED:
        with pytest.raises(AttributeError, match="is not exposed"):
            endpoint.request(name)
        with pytest.raises(AttributeError, match="is not exposed"):
            endpoint.get_attribute(name)
        with pytest.raises(AttributeError, match="is not exposed"):
            endpoint.set_attribute(name, None)
        endpoint.set_attribute_nowait(name, None)  # BOSS's unacknowledged form
        endpoint.notify(name, None)  # a one-way call
    assert sidecar.info()["zid"] == zid  # the session was neither replaced nor detached


def test_hosted_objects_expose_only_their_public_names(make_sidecar: MakeSidecar) -> None:
    """call_object, get_object_attribute and set_object_attribute refuse unexposed names of a hosted object."""
    sidecar = make_sidecar("security")
    echo = sidecar.host(ECHO)
    endpoint = sidecar._supervisor.endpoint()
    for name in ["_secret", *UNEXPOSED, "echo.__globals__"]:
        with pytest.raises(AttributeError, match="is not exposed"):
            endpoint.request("call_object", (_id_of(echo), name, (), {}))
        with pytest.raises(AttributeError, match="is not exposed"):
            endpoint.request("get_object_attribute", (_id_of(echo), name))
        with pytest.raises(AttributeError, match="is not exposed"):
            endpoint.request("set_object_attribute", (_id_of(echo), name, "stolen"))
    assert echo.peek_secret() == "hidden"
    with pytest.raises(AttributeError):
        echo._secret  # noqa: B018  # the proxy refuses it before asking the worker
    with pytest.raises(AttributeError, match="cannot set private attribute"):
        echo._secret = "stolen"


def test_public_methods_cannot_be_replaced_through_attribute_writes(make_sidecar: MakeSidecar) -> None:
    """A write naming a method of the worker or of a hosted object is refused; the method still runs."""
    sidecar = make_sidecar("security")
    echo = sidecar.host(ECHO)
    endpoint = sidecar._supervisor.endpoint()
    with pytest.raises(AttributeError, match="cannot be replaced"):
        endpoint.set_attribute("info", None)
    with pytest.raises(AttributeError, match="cannot be replaced"):
        echo.echo = "stolen"
    assert echo.echo(7) == 7
    assert "zid" in sidecar.info()
    echo.value = 2  # plain attributes stay writable
    assert echo.value == 2


class Exported:
    """A host object handed to a hosted one by reference."""

    def greet(self) -> str:
        return "hello"

    def _private(self) -> str:
        raise AssertionError("a private method of an exported object ran")


def test_the_worker_reaches_only_public_names_of_the_host(make_sidecar: MakeSidecar) -> None:
    """Requests from the worker to the host: exported objects and the host's services show only public names."""
    sidecar = make_sidecar("security")
    echo = sidecar.host(ECHO)
    ref = sidecar.expose(Exported())
    assert echo.call_host(ref, "greet") == "hello"
    for name in ["_private", "__class__", "__init__", "greet.__globals__", ""]:
        with pytest.raises(AttributeError, match="is not exposed"):
            echo.call_host(ref, name)
    for name in ["_sidecar", "__init__", "__class__", "samples.__globals__"]:
        with pytest.raises(AttributeError, match="is not exposed"):
            echo.ask_host(ref, name)


# ----------------------------------------------------------------- the control socket
NOBODY = 65534


def _ask(path: Path) -> str:
    """Try one control request on ``path``; what happened, in a word or three."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        try:
            client.connect(str(path))
        except PermissionError:
            return "permission denied"
        try:
            client.sendall(b'{"command": "health"}\n')
            answer = client.recv(4096)
        except (BrokenPipeError, ConnectionResetError):
            answer = b""  # closed on us while we were still talking
    return "answered" if answer else "closed without an answer"


def _as_other_user(action: Callable[[], str]) -> str:
    """``action()`` in a forked child that switched to uid and gid 65534 (nobody); its result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: plain system calls, then _exit (no cleanup of the parent's state)
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            outcome = action() if os.getuid() == NOBODY else "still privileged"
        except BaseException as exc:
            outcome = f"child failed: {exc!r}"
        os.write(write_end, outcome.encode()[:512])
        os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], BOUND)
        return os.read(read_end, 512).decode() if ready else "the child did not answer"
    finally:
        os.close(read_end)
        deadline = time.monotonic() + BOUND
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)


@pytest.fixture
def control() -> Iterator[ControlServer]:
    """A control server, as the launcher runs it, in a fresh directory others may traverse."""
    base = Path(tempfile.mkdtemp(prefix="fault-control-"))
    os.chmod(base, 0o755)
    server = ControlServer(base / "run" / "control.sock", lambda _request: {"ok": True})
    server.start()
    yield server
    server.close()
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="connecting as another user needs root, to switch uid in a child")
def test_control_socket_is_0600_and_refuses_another_user(control: ControlServer) -> None:
    """Mode 0600 in a 0700 directory keeps others out; opened up anyway, the uid check still refuses them."""
    assert stat.S_IMODE(control.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(control.path.parent.stat().st_mode) == 0o700
    assert request(control.path, {"command": "health"}) == {"ok": True}
    assert _as_other_user(lambda: _ask(control.path)) == "permission denied"
    os.chmod(control.path.parent, 0o755)
    os.chmod(control.path, 0o666)
    assert _as_other_user(lambda: _ask(control.path)) == "closed without an answer"
    assert _ask(control.path) == "answered"


# ----------------------------------------------------------------- the network
def _on_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_workers_with_a_loopback_config_listen_and_connect_only_on_loopback(make_sidecar: MakeSidecar) -> None:
    """psutil: every inet socket of two connected workers, listening or not, is on 127.0.0.0/8."""
    port = free_port()
    first = make_sidecar("security-a", peer_config(port))
    second = make_sidecar("security-b", peer_config(connect_ports=(port,)))
    wait_until(lambda: second.info()["zid"] in first.info()["peers"], BOUND, "the workers to connect")
    for sidecar in (first, second):
        assert sidecar.pid is not None
        sockets = psutil.Process(sidecar.pid).net_connections(kind="inet")
        listening = [conn for conn in sockets if conn.status == psutil.CONN_LISTEN]
        assert listening, "a peer listens on its configured endpoint"
        for conn in sockets:
            assert _on_loopback(conn.laddr.ip), conn
            if conn.raddr:
                assert _on_loopback(conn.raddr.ip), conn
