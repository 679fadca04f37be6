"""A simulated teleoperator: decides when a watching human would take over, like the paper's operators.

In the paper a person watches each robot and grabs the joystick when the policy stalls or is about
to fail, corrects it, and lets go. In the simulated fleet the sim's scripted expert plays that
person; this module holds only the *when* (pure logic, testable without ROS or MuJoCo): take over
after `stall_s` without subtask progress, keep control until the human has completed
`release_after_subtasks` subtasks (or `max_hold_s` passed, or the episode ended), then release so
the policy replans from the corrected state. `watch_probability` models an operator who does not
catch every stall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TakeoverRule:
    stall_s: float = 6.0  # no subtask progress for this long -> take over
    release_after_subtasks: int = 1  # subtasks the human completes before handing back
    min_hold_s: float = 1.0  # a takeover lasts at least this long
    max_hold_s: float = 25.0  # ... and at most this long
    watch_probability: float = 1.0  # chance a stall is noticed at all (re-drawn per stall)

    def __post_init__(self) -> None:
        if self.stall_s <= 0 or self.max_hold_s <= 0 or self.min_hold_s < 0:
            raise ValueError(f"takeover rule durations must be positive: {self}")
        if not 0.0 <= self.watch_probability <= 1.0:
            raise ValueError(f"watch_probability must be in [0, 1], got {self.watch_probability}")


class TakeoverDecider:
    """Feed it (time, subtask index) every tick; it answers whether the human is in control."""

    def __init__(self, rule: TakeoverRule, seed: int = 0) -> None:
        self.rule = rule
        self.rng = np.random.default_rng(seed)
        self.reset(0.0)

    def reset(self, now_s: float) -> None:
        """New episode: nobody holds the stick, the stall clock restarts."""
        self.human = False
        self.last_progress_s = now_s
        self.best_subtask = 0
        self.took_over_at_s = 0.0
        self.subtask_at_takeover = 0
        self.ignored_stall = False
        self.takeovers = 0

    def update(self, now_s: float, subtask_index: int) -> bool:
        rule = self.rule
        if subtask_index > self.best_subtask:
            self.best_subtask = subtask_index
            self.last_progress_s = now_s
            self.ignored_stall = False
        if self.human:
            held = now_s - self.took_over_at_s
            done = self.best_subtask - self.subtask_at_takeover >= rule.release_after_subtasks
            if (done and held >= rule.min_hold_s) or held >= rule.max_hold_s:
                self.human = False
                self.last_progress_s = now_s  # the policy gets a fresh stall budget after a hand-back
            return self.human
        if now_s - self.last_progress_s >= rule.stall_s and not self.ignored_stall:
            if self.rng.random() < rule.watch_probability:
                self.human = True
                self.took_over_at_s = now_s
                self.subtask_at_takeover = self.best_subtask
                self.takeovers += 1
            else:
                self.ignored_stall = True  # this stall goes unnoticed until the next progress
        return self.human
