"""The restart policy's bookkeeping: the intensity limit within its window, and the backoff that grows."""

from __future__ import annotations

from boss_sidecar._restart_budget import RestartBudget
from boss_sidecar.policy import SidecarPolicy


class Clock:
    """A clock the test moves by hand (the budget takes its clock as the supervisor's backend gives it)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


POLICY = SidecarPolicy(max_restarts=2, restart_window=10.0, backoff_initial=1.0, backoff_factor=2.0, backoff_jitter=0)


def test_restarts_count_within_the_window_and_are_forgotten_after_it() -> None:
    clock = Clock()
    budget = RestartBudget(POLICY, clock)
    budget.record()
    clock.now += 6
    budget.record()
    assert budget.recent() == 2
    clock.now += 5  # the first restart is now 11 s old
    assert budget.recent() == 1


def test_the_first_restart_is_immediate_and_later_ones_back_off_more() -> None:
    budget = RestartBudget(POLICY, Clock())
    assert [budget.next_delay() for _ in range(4)] == [0.0, 1.0, 2.0, 4.0]


def test_a_worker_that_ran_stably_makes_the_next_restart_immediate_again() -> None:
    clock = Clock()
    budget = RestartBudget(POLICY, clock)
    budget.next_delay()
    budget.next_delay()
    started = clock.now
    clock.now += 5
    budget.ran_stably(started)  # 5 s is within the window: still failing in a row
    assert budget.next_delay() == 2.0
    clock.now += 20
    budget.ran_stably(started)
    assert budget.next_delay() == 0.0


def test_reset_forgets_restarts_and_failures() -> None:
    budget = RestartBudget(POLICY, Clock())
    budget.record()
    budget.next_delay()
    budget.next_delay()
    budget.reset()
    assert budget.recent() == 0
    assert budget.next_delay() == 0.0
