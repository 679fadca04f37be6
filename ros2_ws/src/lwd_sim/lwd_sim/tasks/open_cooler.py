"""Open-cooler restocking: carry the named carton with both hands into the named side of the cooler.

Scene: an open-top cooler with a left and a right compartment at the back of the table
(jittered sideways) and 2-3 cartons (heavy: the grasp abstraction welds a carton only when both
grippers pinch its two ends) of distinct random colours in a row at the front, with random
order, jittered poses and yaw. Subtasks: (0) the named carton is held with both hands, (1) it
stands upright in the named compartment, released. Failure: a carton in the wrong compartment
or the wrong carton in the cooler, a carton tipped over, anything falls off the table.
"""

from __future__ import annotations

import numpy as np

from lwd_sim.robot import TABLE_TOP_Z
from lwd_sim.scene import FIXTURE_BITS, ObjSpec, SceneSpec
from lwd_sim.skills import CLEAR_Z, BimanualPlaceSkill
from lwd_sim.tasks.base import PALETTE, Task, in_box

COOLER_X = 0.80
CARTON_HALF = (0.045, 0.09, 0.06)
FLOOR_Z = 0.012  # cooler floor top above the table
# Compartment centres (y) and interior half extents in the cooler frame.
COMPARTMENT_Y = {"left": 0.125, "right": -0.125}
COMPARTMENT_HALF = np.array([0.09, 0.115, 0.1])
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
ROW_Y = (-0.29, 0.0, 0.29)
UPRIGHT = 0.8  # carton up-axis z below this = tipped over (spilled)


def _cooler_xml() -> str:
    f = f'{FIXTURE_BITS} rgba="0.78 0.8 0.8 1"'
    return f"""
    <body name="cooler" pos="{COOLER_X} 0 {TABLE_TOP_Z}">
      <geom type="box" pos="0 0 {FLOOR_Z / 2}" size="0.11 0.26 {FLOOR_Z / 2}" {f}/>
      <geom type="box" pos="-0.1 0 0.055" size="0.01 0.26 0.055" {f}/>
      <geom type="box" pos="0.1 0 0.075" size="0.01 0.26 0.075" {f}/>
      <geom type="box" pos="0 0.25 0.065" size="0.11 0.01 0.065" {f}/>
      <geom type="box" pos="0 -0.25 0.065" size="0.11 0.01 0.065" {f}/>
      <geom type="box" pos="0 0 0.055" size="0.09 0.005 0.055" rgba="0.3 0.3 0.32 1" {FIXTURE_BITS}/>
    </body>"""


class OpenCooler(Task):
    name = "open_cooler"
    num_subtasks = 2
    max_steps = 450
    fixtures = ("cooler",)
    wrong_object_subtasks = (0,)

    def scene(self) -> SceneSpec:
        cartons = [ObjSpec(f"carton{i}", "box", CARTON_HALF, PALETTE["white"], mass=0.6, heavy=True) for i in range(3)]
        return SceneSpec(objects=cartons, fixtures_xml=_cooler_xml())

    def randomize(self, env, rng: np.random.Generator) -> str:
        env.model.body_pos[env.body["cooler"], 1] = rng.uniform(-0.05, 0.05)
        n = int(rng.integers(2, 4))
        colours = [COLOURS[i] for i in rng.permutation(len(COLOURS))[:n]]
        rows = [ROW_Y[i] for i in rng.permutation(3)[:n]]
        self.cartons = [f"carton{i}" for i in range(n)]
        for name, colour, y in zip(self.cartons, colours, rows, strict=True):
            env.set_rgba(name, PALETTE[colour])
            xy = np.array([0.47, y]) + rng.uniform(-0.02, 0.02, 2)
            env.place_on_table(name, xy, float(rng.uniform(-0.12, 0.12)))
        k = int(rng.integers(n))
        self.target = self.cartons[k]
        self.distractors = [c for c in self.cartons if c != self.target]
        self.side = "left" if rng.random() < 0.5 else "right"
        self.flags[:] = 0.0
        self.flags[0] = 1.0 if self.side == "left" else -1.0
        return f"Put the {colours[k]} carton into the {self.side} side of the cooler."

    def referents(self) -> dict[str, float]:
        return {self.target: 1.0}

    def compartment(self, env, name: str) -> str:
        """Compartment `name` rests in (released), or ''."""
        if env.holder_of(name) >= 0:
            return ""
        local = env.obj_pos(name) - env.obj_pos("cooler")
        for side, y in COMPARTMENT_Y.items():
            if in_box(local, np.array([0.0, y, 0.1]), COMPARTMENT_HALF):
                return side
        return ""

    def conditions(self, env) -> list[bool]:
        held = env.grasp.held == [env.grasp_names.index(self.target)] * 2
        placed = self.compartment(env, self.target) == self.side and env.obj_up(self.target)[2] > UPRIGHT
        return [held or placed, placed]

    def failure(self, env) -> str:
        for name in self.cartons:
            if env.obj_up(name)[2] < UPRIGHT and env.holder_of(name) < 0:
                return f"{name} tipped over"
        for name in self.distractors:
            if self.compartment(env, name):
                return f"wrong carton {name} put in the cooler"
        side = self.compartment(env, self.target)
        if side and side != self.side:
            return f"carton put in the {side} compartment instead of the {self.side}"
        return ""

    def _skill(self, name: str) -> BimanualPlaceSkill:
        def goal(env) -> np.ndarray:
            c = env.obj_pos("cooler")
            return np.array([c[0], c[1] + COMPARTMENT_Y[self.side], TABLE_TOP_Z + FLOOR_Z + CARTON_HALF[2] + 0.008])

        return BimanualPlaceSkill(name, goal, clear_z=CLEAR_Z)

    def plan(self, env):
        s = self._skill(self.target)
        return [s, s]

    def wrong_object_plan(self, env, subtask: int, rng: np.random.Generator):
        s = self._skill(self.distractors[int(rng.integers(len(self.distractors)))])
        return [s, s]


TASK_CLASS = OpenCooler
