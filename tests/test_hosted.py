"""Hosted-object proxies: every public name of the object reaches it; the proxy's own operations
(drop, async attribute writes) are module functions that no name of the object can shadow."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from boss_sidecar import AsyncSidecar, Sidecar, adrop, aset, drop
from boss_sidecar.testing import peer_config
from peers.sidecar_support import BOUND, Collector

INSTRUMENT = "peers.sidecar_objects:Instrument"
NAMES = ["close", "stop", "reset", "drop", "set_attribute"]


def test_every_public_name_of_a_hosted_object_reaches_it(make_sidecar: Callable[..., Sidecar]) -> None:
    """``close``, ``stop``, ``reset``, ``drop`` and ``set_attribute`` are the instrument's, not the proxy's."""
    sidecar = make_sidecar("hosted")
    instrument = sidecar.host(INSTRUMENT)
    answers = [getattr(instrument, name)() for name in NAMES[:-1]] + [instrument.set_attribute("gain", 2)]
    assert answers == [
        "instrument closed",
        "instrument stopped",
        "instrument reset",
        "instrument dropped",
        "instrument set_attribute",
    ]
    assert instrument.history() == ["close", "stop", "reset", "drop", "set_attribute gain=2"]
    instrument.mode = "busy"  # a plain write still goes to the object
    assert instrument.mode == "busy"


def test_drop_tears_the_object_down_and_it_is_not_rebuilt_after_a_restart(make_sidecar: Callable[..., Sidecar]) -> None:
    """``boss_sidecar.drop(proxy)``: the object is gone in the worker and stays gone after a restart."""
    sidecar = make_sidecar("hosted")
    kept, dropped = sidecar.host("peers.sidecar_objects:Counter", 5), sidecar.host(INSTRUMENT)
    drop(dropped)
    with pytest.raises(LookupError):
        dropped.history()
    restarts = Collector()
    sidecar.on_restart(lambda incarnation, reason: restarts(incarnation))
    sidecar.restart()
    restarts.wait(1, BOUND)
    assert kept.increment() == 6  # rebuilt from its arguments
    with pytest.raises(LookupError):
        dropped.history()
    drop(dropped)  # twice is harmless
    with pytest.raises(TypeError, match="adrop"):
        drop(object())  # type: ignore[arg-type]


async def test_an_async_proxy_forwards_every_public_name_and_is_dropped_with_adrop() -> None:
    """The async proxy has no public name of its own either; ``aset`` writes, ``adrop`` drops."""
    async with AsyncSidecar("hosted-async", peer_config()) as sidecar:
        instrument = await sidecar.host(INSTRUMENT)
        assert await instrument.close() == "instrument closed"
        assert await instrument.set_attribute("gain", 3) == "instrument set_attribute"
        await aset(instrument, "mode", "armed")
        assert await instrument.mode == "armed"
        with pytest.raises(TypeError, match="aset"):
            instrument.mode = "x"
        assert "Instrument" in repr(instrument) and "(async)" in repr(instrument)
        await adrop(instrument)
        with pytest.raises(LookupError):
            await instrument.history()
