"""Base for long-horizon tasks driven by an ordered list of expected events.

Each subtask is completed by a list of events (pours, placements...). Events happening out of
the expected order are unrecoverable ("early mistakes doom later steps"): the task fails with
a reason naming the event. Subclasses feed events via `_event(env, ev)` from post_step().
"""

from __future__ import annotations

import numpy as np

from lwd_sim.tasks.base import Task
from lwd_sim.tasks.events import PourTracker


class EventTask(Task):
    """`self.expected[k]` = set of events that together complete subtask k (any order inside k)."""

    pour_sources: tuple[str, ...] = ()
    pour_targets: tuple[str, ...] = ()

    def begin_events(self, expected: list[list[tuple[str, str]]]) -> None:
        self.expected = expected
        self.pending = [list(e) for e in expected]
        self.event_log: list[tuple[str, str]] = []
        self.pours = PourTracker(self.pour_sources, self.pour_targets)
        self.pours.reset()

    def done_events(self, k: int) -> bool:
        return not self.pending[k]

    def _event(self, env, ev: tuple[str, str]) -> None:
        self.event_log.append(ev)
        k = self.index
        while k < self.num_subtasks and not self.pending[k]:
            k += 1
        if k < self.num_subtasks and ev in self.pending[k]:
            self.pending[k].remove(ev)
            return
        if not self.failed_reason:
            self.failed_reason = f"unexpected {ev[0]} -> {ev[1]}"

    def post_step(self, env) -> None:
        for ev in self.pours.events(env):
            self._event(env, ev)
        # Per subtask, the fraction of its events done: "two of the three cups are filled" is what the
        # scene shows (and the next cup to fill depends on it), so a state policy must see it too.
        progress = [1.0 - len(p) / len(e) if e else 1.0 for p, e in zip(self.pending, self.expected, strict=True)]
        n = min(len(self.flags), self.num_subtasks)
        self.flags[:n] = progress[:n]

    def first_pending_target(self, k: int, source: str):
        """Callable for PourSkill: the next target `source` must pour into for subtask k."""

        def target(env) -> str:
            for src, tgt in self.pending[k]:
                if src == source:
                    return tgt
            return self.expected[k][-1][1]

        return target

    def randomize_mirror(self, rng: np.random.Generator) -> float:
        return 1.0 if rng.random() < 0.5 else -1.0
