"""The restart back-off and give-up window, on a clock the test controls."""

from __future__ import annotations

import pytest

from supervisor.restart_policy import RestartPolicy
from supervisor.settings import RestartSettings

CONFIG = RestartSettings(backoff_initial_s=2, backoff_factor=2, backoff_max_s=10, max_restarts=4, window_s=100)


def test_first_fault_restarts_at_once_then_backs_off_exponentially_up_to_max():
    policy = RestartPolicy(CONFIG)
    delays = [policy.decide("crash", now).delay_s for now in (0, 1, 2, 3)]
    assert delays == [0, 2, 4, 8]
    capped = RestartPolicy(RestartSettings(backoff_initial_s=2, backoff_factor=2, backoff_max_s=10, max_restarts=10,
                                             window_s=100))
    assert [capped.decide("hang", t).delay_s for t in range(6)] == [0, 2, 4, 8, 10, 10]


def test_more_faults_than_max_in_window_gives_up():
    policy = RestartPolicy(CONFIG)
    decisions = [policy.decide(reason, now) for now, reason in
                 enumerate(["crash", "unresponsive", "hang", "leak", "crash"])]
    assert [d.give_up for d in decisions] == [False, False, False, False, True]
    assert decisions[-1].faults_in_window == 5


def test_faults_older_than_window_are_forgotten():
    policy = RestartPolicy(CONFIG)
    for now in (0, 1, 2, 3):
        policy.decide("crash", now)
    decision = policy.decide("crash", 150)  # all four are out of the 100 s window
    assert not decision.give_up and decision.delay_s == 0 and decision.faults_in_window == 1


def test_planned_restarts_neither_wait_nor_count():
    policy = RestartPolicy(CONFIG)
    for now in range(20):
        decision = policy.decide("recycle" if now % 2 else "request", now)
        assert not decision.give_up and decision.delay_s == 0
    assert policy.decide("crash", 21).faults_in_window == 1


def test_reset_forgets_faults_after_operator_restart():
    policy = RestartPolicy(CONFIG)
    for now in range(5):
        policy.decide("crash", now)
    policy.reset()
    assert policy.decide("crash", 6) .faults_in_window == 1


def test_unknown_reason_is_a_bug():
    with pytest.raises(ValueError, match="unknown restart reason"):
        RestartPolicy(CONFIG).decide("bored", 0)
