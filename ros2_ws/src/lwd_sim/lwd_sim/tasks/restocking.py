"""Restocking: put the product named in the instruction onto the shelf, among 2-4 distractors.

Scene: a shelf board (riser) at the back of the table; 3-5 products (boxes/cans, random
colours) on the front half. Subtasks: (0) the named product is grasped, (1) it rests on the
shelf, released. Failure: a distractor placed on the shelf, or anything falls off the table.
"""

from __future__ import annotations

import numpy as np

from lwd_sim.robot import TABLE_TOP_Z
from lwd_sim.scene import FIXTURE_BITS, SceneSpec
from lwd_sim.skills import CLEAR_Z, PlaceSkill
from lwd_sim.tasks.base import Task, in_box, sample_slots
from lwd_sim.tasks.grocery import assign_products, product_slots

SHELF_CENTER = np.array([0.80, 0.0])
SHELF_HALF = np.array([0.08, 0.34])
SHELF_TOP = TABLE_TOP_Z + 0.10
FRONT_SLOTS = [(x, y) for x in (0.46, 0.60) for y in (-0.30, -0.15, 0.0, 0.15, 0.30)]


class Restocking(Task):
    name = "restocking"
    arm_split_y = 0.075  # between the y = 0 and y = 0.15 slots (Task.arm_split_y)
    num_subtasks = 2
    max_steps = 450
    wrong_object_subtasks = (0,)

    def scene(self) -> SceneSpec:
        c, h = SHELF_CENTER, SHELF_HALF
        fixtures = (
            f'<geom name="shelf" type="box" pos="{c[0]} {c[1]} {TABLE_TOP_Z + 0.05}" '
            f'size="{h[0]} {h[1]} 0.05" rgba="0.45 0.33 0.22 1" {FIXTURE_BITS}/>'
        )
        return SceneSpec(objects=product_slots(), fixtures_xml=fixtures)

    def randomize(self, env, rng: np.random.Generator) -> str:
        n = int(rng.integers(3, 6))
        self.products = assign_products(env, rng, n)
        for (slot, _, _), xy in zip(self.products, sample_slots(rng, FRONT_SLOTS, n), strict=True):
            env.place_on_table(slot, xy, float(rng.uniform(-0.3, 0.3)))
        self.target, colour, kind = self.products[int(rng.integers(n))]
        self.distractors = [p[0] for p in self.products if p[0] != self.target]
        return f"Put the {colour} {kind} on the shelf."

    def referents(self) -> dict[str, float]:
        return {self.target: 1.0}

    def _on_shelf(self, env, name: str) -> bool:
        p = env.obj_pos(name)
        return in_box(p[:2], SHELF_CENTER, SHELF_HALF) and p[2] > SHELF_TOP and env.holder_of(name) < 0

    def conditions(self, env) -> list[bool]:
        return [env.holder_of(self.target) >= 0, self._on_shelf(env, self.target)]

    def failure(self, env) -> str:
        for name in self.distractors:
            if self._on_shelf(env, name):
                return f"wrong item {name} placed on the shelf"
        return ""

    def _goal(self, name: str):
        def goal(env) -> np.ndarray:
            y = float(np.clip(env.home_pose[name][1], -0.25, 0.25))
            return np.array([SHELF_CENTER[0], y, SHELF_TOP + env.objspec(name).half_height + 0.006])

        return goal

    def plan(self, env):
        skill = PlaceSkill(self.target, self._goal(self.target), clear_z=CLEAR_Z + 0.05)
        return [skill, skill]

    def wrong_object_plan(self, env, subtask: int, rng: np.random.Generator):
        wrong = self.distractors[int(rng.integers(len(self.distractors)))]
        skill = PlaceSkill(wrong, self._goal(wrong), clear_z=CLEAR_Z + 0.05)
        return [skill, skill]


TASK_CLASS = Restocking
