"""The simulated teleoperator's takeover rule, checked against hand-worked timelines."""

from __future__ import annotations

import pytest

from lwd_fleet.drivers.virtual_teleop import TakeoverDecider, TakeoverRule


def _run(decider: TakeoverDecider, timeline: list[tuple[float, int]]) -> list[bool]:
    return [decider.update(t, k) for t, k in timeline]


def test_takes_over_after_a_stall_and_hands_back_after_progress():
    d = TakeoverDecider(TakeoverRule(stall_s=2.0, release_after_subtasks=1, min_hold_s=0.5))
    timeline = [(0.0, 0), (1.0, 1), (2.9, 1), (3.0, 1), (3.2, 1), (4.0, 2), (4.1, 2), (5.0, 2), (6.1, 2)]
    # progress at 1.0 -> stall clock from 1.0; takeover at 3.0; subtask 2 at 4.0 (held 1.0 >= 0.5) -> release;
    # fresh stall budget from 4.0 -> next takeover at 6.0 or later.
    assert _run(d, timeline) == [False, False, False, True, True, False, False, False, True]
    assert d.takeovers == 2


def test_min_hold_keeps_control_and_max_hold_releases():
    d = TakeoverDecider(TakeoverRule(stall_s=1.0, release_after_subtasks=1, min_hold_s=2.0, max_hold_s=5.0))
    assert _run(d, [(0.0, 0), (1.0, 0), (1.5, 1), (2.9, 1), (3.0, 1)]) == [False, True, True, True, False]
    d.reset(10.0)
    assert _run(d, [(11.0, 0), (15.9, 0), (16.0, 0)]) == [True, True, False]


def test_unwatched_stalls_are_ignored_until_progress():
    d = TakeoverDecider(TakeoverRule(stall_s=1.0, watch_probability=0.0))
    assert not any(_run(d, [(t * 0.5, 0) for t in range(20)]))
    assert d.takeovers == 0


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="watch_probability"):
        TakeoverRule(watch_probability=1.5)
    with pytest.raises(ValueError, match="positive"):
        TakeoverRule(stall_s=0)
