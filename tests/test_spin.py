"""The busy-wait budget backs off after misses and comes back after a hit."""

from __future__ import annotations

from boss_sidecar._spin import MAX_SKIPPED, _SpinBudget

BUDGET = 100e-6


def _waits_until_a_try(spin: _SpinBudget) -> int:
    """How many waits sleep at once before the next one busy-waits again (bounded: the cap and one more)."""
    for slept in range(MAX_SKIPPED + 2):
        if spin.next_wait():
            return slept
    raise AssertionError("the budget never came back")


def test_every_wait_busy_waits_while_tries_hit() -> None:
    spin = _SpinBudget(BUDGET)
    for _ in range(100):
        assert spin.next_wait() == BUDGET
        spin.hit()


def test_after_a_miss_the_next_wait_sleeps_then_the_one_after_tries_again() -> None:
    spin = _SpinBudget(BUDGET)
    assert spin.next_wait() == BUDGET
    spin.miss()
    assert spin.next_wait() == 0
    assert spin.next_wait() == BUDGET


def test_misses_in_a_row_double_the_waits_slept_through_up_to_a_cap() -> None:
    spin = _SpinBudget(BUDGET)
    spin.next_wait()
    slept = []
    for _ in range(10):
        spin.miss()
        slept.append(_waits_until_a_try(spin))
    assert slept == [1, 2, 4, 8, 16, 32, 64, 64, 64, 64]


def test_a_hit_ends_the_back_off() -> None:
    spin = _SpinBudget(BUDGET)
    for _ in range(5):
        spin.miss()
        _waits_until_a_try(spin)
    spin.hit()
    spin.miss()
    assert _waits_until_a_try(spin) == 1


def test_a_zero_budget_never_busy_waits() -> None:
    spin = _SpinBudget(0.0)
    assert [spin.next_wait() for _ in range(5)] == [0.0] * 5
