"""AsyncSidecar with real workers: every operation awaited, with Sidecar's options and checks;
callbacks and handlers on the loop; restart replay; timeouts and errors. (A full put buffer and
cancelled operations: test_faults_embedding.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from boss_sidecar import CallTimeout, Query, QueryReply, Sample, SidecarUnavailable
from boss_sidecar.testing import free_port, peer_config
from peers.sidecar_support import BOUND

ECHO = "peers.fault_objects:FaultEcho"
T = TypeVar("T")


async def bounded(awaitable: Awaitable[T]) -> T:
    """Every wait in these tests has a bound (a hang fails the test instead of stalling it)."""
    return await asyncio.wait_for(awaitable, BOUND)


async def test_async_for_yields_puts_and_deletes_in_order(make_async: Any) -> None:
    """``async for`` over a subscription: a put then a delete of the key, as published."""
    sidecar = await make_async()
    sub = await sidecar.subscribe("async/k")
    await sidecar.put("async/k", "1", encoding="text/plain", attachment="a")
    await sidecar.delete("async/k", priority="data")
    received: list[Sample] = []
    async for sample in sub:
        received.append(sample)
        if len(received) == 2:
            break
    assert [(s.kind, s.payload, s.attachment) for s in received] == [("put", b"1", b"a"), ("delete", b"", None)]
    assert "zid" in await sidecar.info()
    await sub.aclose()


async def test_async_callbacks_and_handlers_run_on_the_loop(make_async: Any) -> None:
    """A coroutine callback gets the samples; coroutine and plain query handlers answer ``get``."""
    sidecar = await make_async()
    loop_thread = asyncio.get_running_loop()
    got: asyncio.Queue[Sample] = asyncio.Queue()

    async def on_sample(sample: Sample) -> None:
        assert asyncio.get_running_loop() is loop_thread
        await got.put(sample)

    async def answer(query: Query) -> QueryReply:
        await asyncio.sleep(0)
        return QueryReply("async/q", f"answer to {query.selector}")

    def refuse(_query: Query) -> str:
        raise PermissionError("not you")

    await sidecar.subscribe("async/cb", on_sample)
    await sidecar.queryable("async/q", answer)
    await sidecar.queryable("async/refuse", refuse)
    await sidecar.put("async/cb", b"x")
    assert (await bounded(got.get())).payload == b"x"
    (reply,) = await sidecar.get("async/q", timeout=5)
    assert (reply.ok, reply.text()) == (True, "answer to async/q")
    (refused,) = await sidecar.get("async/refuse", timeout=5)
    assert (refused.ok, refused.text()) == (False, "PermissionError: not you")


async def test_options_are_checked_as_by_sidecar(make_async: Any) -> None:
    """A misspelt option of ``delete`` (or any operation) is refused, as Sidecar refuses it."""
    sidecar = await make_async()
    with pytest.raises(TypeError, match="priorty"):
        await sidecar.delete("async/k", priorty="data")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="encodng"):
        await sidecar.put("async/k", b"1", encodng="x")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="invalid key expression"):
        await sidecar.delete("async//k")


async def test_liveliness_token_subscription_and_listing(make_async: Any) -> None:
    """A token of one async sidecar is seen by another's liveliness subscription and listing."""
    port = free_port()
    a = await make_async("lv-a", peer_config(port))
    b = await make_async("lv-b", peer_config(connect_ports=(port,)))
    zid = (await b.info())["zid"]
    while zid not in (await a.info())["peers"]:
        await bounded(asyncio.sleep(0.05))  # polling a remote fact: no event says "connected"
    changes = await a.liveliness_subscribe("lv/**")
    token = await b.liveliness_token("lv/b")
    appeared = await bounded(changes.__aiter__().__anext__())
    assert (appeared.key_expr, appeared.kind) == ("lv/b", "put")
    assert await a.liveliness_get("lv/**", timeout=5) == ["lv/b"]
    await asyncio.to_thread(token.close)
    gone = await bounded(changes.__aiter__().__anext__())
    assert (gone.key_expr, gone.kind) == ("lv/b", "delete")


async def test_restart_replays_declarations_and_hosted_objects(make_async: Any) -> None:
    """After ``restart()`` the subscription's async callback fires again and the object is rebuilt."""
    sidecar = await make_async()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_sample(sample: Sample) -> None:
        await got.put(sample.payload)

    await sidecar.subscribe("async/replay", on_sample)
    echo = await sidecar.host(ECHO)
    first = await echo.pid()
    await sidecar.restart()
    assert sidecar.incarnation == 2
    assert await echo.pid() not in (first, None)
    await sidecar.put("async/replay", b"after")
    assert await bounded(got.get()) == b"after"


async def test_timeouts_and_errors_arrive_as_with_sidecar(make_async: Any) -> None:
    """A call past its timeout: CallTimeout; a remote exception: itself; a stopped sidecar: unavailable."""
    sidecar = await make_async(call_timeout=1.0, heartbeat_timeout=60.0)
    echo = await sidecar.host(ECHO)
    with pytest.raises(CallTimeout):
        await echo.block_forever()
    with pytest.raises(ValueError, match="bad value") as raised:
        await echo.raise_value_error("bad value")
    assert "remote traceback" in raised.value.__notes__[0]
    await sidecar.stop()
    with pytest.raises(SidecarUnavailable):
        await sidecar.get("async/q")
