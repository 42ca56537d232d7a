"""How the worker's forwarder cuts runs of items into messages (no zenoh needed)."""

from __future__ import annotations

from boss_sidecar.worker.forward import MAX_MESSAGE_BYTES, spans


def test_a_group_ends_before_the_item_that_would_take_it_past_the_limit() -> None:
    """Groups stay within MAX_MESSAGE_BYTES: the item that would overflow one starts the next."""
    third = MAX_MESSAGE_BYTES // 3
    assert spans([third, third, third, third]) == [(0, 3), (3, 4)]
    assert spans([third + 1, third + 1, third + 1]) == [(0, 2), (2, 3)]


def test_an_item_over_the_limit_travels_alone() -> None:
    """An item larger than the limit is a group of its own, neither joined nor split."""
    assert spans([10, MAX_MESSAGE_BYTES * 2, 10]) == [(0, 1), (1, 2), (2, 3)]


def test_small_items_share_one_group_and_nothing_makes_no_group() -> None:
    """Many small items go together; no items, no groups."""
    assert spans([64] * 1000) == [(0, 1000)]
    assert spans([]) == []
