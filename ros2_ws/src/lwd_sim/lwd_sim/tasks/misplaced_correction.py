"""Misplaced-item correction: the shelf has a boxes section (left) and a cans section (right);
one product sits in the wrong section and the instruction names it.

Subtasks: (0) the named product is grasped, (1) it rests in its own section, released.
Failure: any other product leaves its section (wrong item moved), or anything falls.
"""

from __future__ import annotations

import numpy as np

from lwd_sim.robot import TABLE_TOP_Z
from lwd_sim.scene import FIXTURE_BITS, SceneSpec
from lwd_sim.skills import CLEAR_Z, PlaceSkill
from lwd_sim.tasks.base import Task
from lwd_sim.tasks.grocery import assign_products, product_slots

SHELF_X = 0.78
SHELF_TOP = TABLE_TOP_Z + 0.10
SECTION_Y = {"box": (0.02, 0.36), "can": (-0.36, -0.02)}
SLOTS_Y = (0.06, 0.145, 0.23, 0.315)


class MisplacedCorrection(Task):
    name = "misplaced_correction"
    num_subtasks = 2
    max_steps = 450
    wrong_object_subtasks = (0,)

    def scene(self) -> SceneSpec:
        f = (
            f'<geom name="shelf" type="box" pos="{SHELF_X} 0 {TABLE_TOP_Z + 0.05}" size="0.08 0.36 0.05" '
            f'rgba="0.45 0.33 0.22 1" {FIXTURE_BITS}/>'
            f'<geom type="box" pos="{SHELF_X - 0.079} 0.19 {SHELF_TOP - 0.02}" size="0.002 0.17 0.02" '
            f'rgba="0.9 0.5 0.1 1" contype="0" conaffinity="0"/>'
            f'<geom type="box" pos="{SHELF_X - 0.079} -0.19 {SHELF_TOP - 0.02}" size="0.002 0.17 0.02" '
            f'rgba="0.1 0.5 0.9 1" contype="0" conaffinity="0"/>'
        )
        return SceneSpec(objects=product_slots(), fixtures_xml=f)

    def _section(self, env, name: str) -> str:
        p = env.obj_pos(name)
        if env.holder_of(name) >= 0 or abs(p[0] - SHELF_X) > 0.08 or p[2] < SHELF_TOP:
            return ""
        for kind, (lo, hi) in SECTION_Y.items():
            if lo <= p[1] <= hi:
                return kind
        return ""

    def randomize(self, env, rng: np.random.Generator) -> str:
        n = int(rng.integers(3, 5))
        self.products = assign_products(env, rng, n)
        self.target, colour, kind = self.products[int(rng.integers(n))]
        wrong = "can" if kind == "box" else "box"
        sign = {"box": 1.0, "can": -1.0}
        # Keep the misplaced product and its goal slot near the middle so either arm can do it.
        self.goal_y = {kind: sign[kind] * SLOTS_Y[0]}
        target_y = sign[wrong] * SLOTS_Y[int(rng.integers(2))]
        free = {
            kind: [sign[kind] * y for y in SLOTS_Y[1:]],  # innermost slot kept free for the goal
            wrong: [sign[wrong] * y for y in SLOTS_Y if sign[wrong] * y != target_y],
        }
        for k in free.values():
            rng.shuffle(k)
        self.home_section = {}
        for slot, _, k in self.products:
            section = wrong if slot == self.target else k
            y = target_y if slot == self.target else free[section].pop()
            env.place_on_table(slot, np.array([SHELF_X + rng.uniform(-0.015, 0.015), y]), 0.0, SHELF_TOP)
            self.home_section[slot] = section
        self.distractors = [p[0] for p in self.products if p[0] != self.target]
        return f"The {colour} {kind} is in the wrong section; move it to the {kind}s section."

    def referents(self) -> dict[str, float]:
        return {self.target: 1.0}

    def conditions(self, env) -> list[bool]:
        return [env.holder_of(self.target) >= 0, self._section(env, self.target) == self.target[:-1]]

    def failure(self, env) -> str:
        for name in self.distractors:
            if env.holder_of(name) < 0 and self._section(env, name) != self.home_section[name]:
                return f"wrong item {name} moved"
        return ""

    def _skill(self, name: str, section: str) -> PlaceSkill:
        y = self.goal_y[section]
        z = SHELF_TOP + 0.006
        return PlaceSkill(
            name, lambda env: np.array([SHELF_X, y, z + env.objspec(name).half_height]), clear_z=CLEAR_Z + 0.06
        )

    def plan(self, env):
        s = self._skill(self.target, self.target[:-1])
        return [s, s]

    def wrong_object_plan(self, env, subtask: int, rng: np.random.Generator):
        """Take a distractor off the shelf to the table front instead of the named product."""
        wrong = self.distractors[int(rng.integers(len(self.distractors)))]
        y = 0.12 if env.obj_pos(wrong)[1] > 0 else -0.12
        s = PlaceSkill(
            wrong,
            lambda env: np.array([0.5, y, TABLE_TOP_Z + env.objspec(wrong).half_height + 0.006]),
            clear_z=CLEAR_Z + 0.06,
        )
        return [s, s]


TASK_CLASS = MisplacedCorrection
