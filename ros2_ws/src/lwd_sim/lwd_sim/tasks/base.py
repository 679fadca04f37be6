"""Task base class: scene declaration, randomised reset, ordered subtask detection, failures.

A task owns (a) the scene slots, (b) the reset distribution and instruction, (c) ordered
subtask *conditions* that the base latches in order into a monotone subtask index, (d) its
unrecoverable-failure checks, and (e) the expert plan (one skill per subtask). Success is
exactly "subtask index reached num_subtasks"; reward is 1 only then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lwd_sim.robot import TABLE_CENTER_X, TABLE_HALF, TABLE_TOP_Z
from lwd_sim.scene import SceneSpec

if TYPE_CHECKING:
    from lwd_sim.env import LwdSimEnv
    from lwd_sim.skills import Skill

NUM_TASK_FLAGS = 8


@dataclass
class TaskStatus:
    subtask_index: int
    success: bool
    failed: bool
    reason: str = ""


PALETTE: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.15, 0.12, 1.0),
    "green": (0.15, 0.7, 0.2, 1.0),
    "blue": (0.15, 0.3, 0.9, 1.0),
    "yellow": (0.95, 0.85, 0.1, 1.0),
    "purple": (0.6, 0.2, 0.75, 1.0),
    "orange": (0.98, 0.5, 0.05, 1.0),
    "white": (0.95, 0.95, 0.95, 1.0),
    "black": (0.08, 0.08, 0.08, 1.0),
}


class Task:
    """Subclasses set name/num_subtasks/max_steps and implement the hooks below."""

    name: str = ""
    num_subtasks: int = 1
    max_steps: int = 300
    # Mistakes an imperfect expert may inject on this task (see experts.ExpertConfig).
    mistakes: tuple[str, ...] = ("drop",)
    # Static bodies that randomize() moves; their xy goes into the sim state (env.STATE_LAYOUT).
    fixtures: tuple[str, ...] = ()
    # Objects with grasp point y > arm_split_y go to the left arm (0), the rest to the right (1)
    # (skills.default_arm). Tasks with a slot at y = 0 move the split between slots: a split inside
    # a slot's jitter flips the expert's arm from scene to scene, and BC averages the two into neither.
    arm_split_y: float = 0.0

    def __init__(self) -> None:
        self.index = 0
        self.failed_reason = ""
        self.instruction = ""
        self.flags = np.zeros(NUM_TASK_FLAGS)

    # --- hooks ---------------------------------------------------------------------------
    def scene(self) -> SceneSpec:
        raise NotImplementedError

    def randomize(self, env: LwdSimEnv, rng: np.random.Generator) -> str:
        """Place/colour the scene for a new episode and return the instruction."""
        raise NotImplementedError

    def conditions(self, env: LwdSimEnv) -> list[bool]:
        """Per-subtask completion condition evaluated now (latched in order by the base)."""
        raise NotImplementedError

    def failure(self, env: LwdSimEnv) -> str:
        """Non-empty reason when the episode can no longer succeed."""
        return ""

    def plan(self, env: LwdSimEnv) -> list[Skill]:
        """Expert skill for each subtask, in order."""
        raise NotImplementedError

    def referents(self) -> dict[str, float]:
        """Objects the instruction names -> 1 (2 for a second, ordered one); the sim_state 'referents' block."""
        return {}

    def referent_order(self, env: LwdSimEnv) -> list[str]:
        """The named objects in the order the task still works on them: the sim_state 'referent_poses' slots.

        Default: the instruction's order (referent value). Tasks whose subtasks act on one named object
        after another override it so that the first slot is always the object of the current step:
        otherwise a state policy must gate "which named object now" on the progress flags, and an MLP
        trained on long demos blends the two objects' poses instead (measured on cocktail, session 14).
        """
        named = self.referents()
        return sorted(named, key=lambda name: named[name])

    def post_step(self, env: LwdSimEnv) -> None:
        """Update event state (pours, cuts...) once per control tick, before conditions()."""

    # --- mistakes an imperfect expert can inject --------------------------------------------
    wrong_object_subtasks: tuple[int, ...] = ()

    def mistake_subtasks(self, kind: str) -> list[int]:
        """Subtasks at which mistake `kind` can be injected (empty: not applicable)."""
        if kind == "skip":
            return list(range(self.num_subtasks - 1)) if self.num_subtasks > 2 else []
        if kind == "wrong_object":
            return list(self.wrong_object_subtasks)
        return list(range(self.num_subtasks))

    def wrong_object_plan(self, env: LwdSimEnv, subtask: int, rng: np.random.Generator) -> list[Skill]:
        """Plan in which subtask `subtask` acts on a distractor (only for wrong_object_subtasks)."""
        raise NotImplementedError(f"{self.name} has no wrong-object mistake")

    # --- driven by the env ------------------------------------------------------------------
    def reset(self, env: LwdSimEnv, rng: np.random.Generator) -> str:
        self.index = 0
        self.failed_reason = ""
        self.flags = np.zeros(NUM_TASK_FLAGS)
        self.instruction = self.randomize(env, rng)
        self._initially_true = [False] * self.num_subtasks
        env.forward()
        self._initially_true = list(self.conditions(env))
        return self.instruction

    def update(self, env: LwdSimEnv) -> TaskStatus:
        self.post_step(env)
        if not self.failed_reason:
            conds = self.conditions(env)
            while self.index < self.num_subtasks and conds[self.index]:
                self.index += 1
            if self.index < self.num_subtasks:
                self.failed_reason = self.failure(env) or _off_table(env) or self._out_of_order(conds)
        success = self.index >= self.num_subtasks and not self.failed_reason
        return TaskStatus(self.index, success, bool(self.failed_reason), self.failed_reason)

    def _out_of_order(self, conds: list[bool]) -> str:
        """A later subtask achieved while an earlier one is pending = a skipped step (unrecoverable)."""
        for j in range(self.index + 1, self.num_subtasks):
            if conds[j] and not self._initially_true[j]:
                return f"subtask {j} done before subtask {self.index} (step skipped)"
        return ""


def _off_table(env: LwdSimEnv) -> str:
    """Generic unrecoverable failure: an active object left the table (fell or was thrown)."""
    for name in env.active_objects:
        p = env.obj_pos(name)
        off_xy = abs(p[0] - TABLE_CENTER_X) > TABLE_HALF[0] + 0.02 or abs(p[1]) > TABLE_HALF[1] + 0.02
        if p[2] < TABLE_TOP_Z - 0.05 or (off_xy and p[2] < TABLE_TOP_Z + 0.02):
            return f"{name} fell off the table"
    return ""


def in_box(p: np.ndarray, center: np.ndarray, half: np.ndarray) -> bool:
    return bool(np.all(np.abs(np.asarray(p) - np.asarray(center)) <= np.asarray(half)))


def sample_slots(
    rng: np.random.Generator, slots: list[tuple[float, float]], n: int, jitter: float = 0.015
) -> list[np.ndarray]:
    """Pick n distinct slot positions (x, y) in random order, each jittered."""
    order = rng.permutation(len(slots))[:n]
    return [np.array(slots[i]) + rng.uniform(-jitter, jitter, 2) for i in order]
