"""The chaos run's control-loop stall measure (`lwd_learner.chaos.observe.command_stats`), pure numbers.

The invariant must see a stall of the robot's loop and must not see a stall of the observer: the
gaps are taken between the commands' stamps (the controller's clock), not their arrival times.
"""

from __future__ import annotations

import pytest

from lwd_learner.chaos.observe import command_stats

TICK = 1.0 / 30.0


def _ticks(n: int, start: float = 100.0) -> list[float]:
    return [start + i * TICK for i in range(n)]


def test_an_observer_stall_is_not_a_control_loop_gap():
    stamps = _ticks(90)  # 3 s of a loop that never missed a tick
    # the observer thread was starved for ~0.8 s: ticks 30..53 arrive together with tick 54
    arrivals = [1.0 + (i if i < 30 else max(i, 54)) * TICK for i in range(90)]
    s = command_stats(list(zip(arrivals, stamps, strict=True)), t0=1.0, t1=4.0, threshold_s=0.5)
    assert s["ticks"] == 90
    assert s["gaps_over_threshold"] == 0
    assert s["max_gap_s"] == pytest.approx(TICK, abs=1e-3)
    assert s["max_arrival_gap_s"] == pytest.approx(25 * TICK, abs=1e-3)  # seen, reported apart


def test_a_stalled_loop_is_counted_once_per_stall_with_its_length():
    stamps = [*_ticks(30), *_ticks(30, start=100.0 + 29 * TICK + 0.7)]  # the loop stopped for 0.7 s once
    arrivals = [1.0 + (s - 100.0) for s in stamps]
    s = command_stats(list(zip(arrivals, stamps, strict=True)), t0=1.0, t1=3.0, threshold_s=0.5)
    assert s["gaps_over_threshold"] == 1
    assert s["max_gap_s"] == pytest.approx(0.7, abs=1e-3)
    assert s["largest_gaps"][0]["at_stamp_s"] == pytest.approx(29 * TICK, abs=1e-2)


def test_only_commands_that_arrived_in_the_window_count():
    stamps = _ticks(60)
    arrivals = [1.0 + i * TICK for i in range(60)]
    s = command_stats(list(zip(arrivals, stamps, strict=True)), t0=1.49, t1=2.01, threshold_s=0.5)
    assert s["ticks"] == 16  # arrivals 1.5 .. 2.0
    assert s["rate_hz"] == pytest.approx(16 / 0.52, abs=0.01)
    empty = command_stats([], t0=0.0, t1=1.0, threshold_s=0.5)
    assert empty["ticks"] == 0 and empty["max_gap_s"] is None and empty["max_arrival_gap_s"] == 1.0
