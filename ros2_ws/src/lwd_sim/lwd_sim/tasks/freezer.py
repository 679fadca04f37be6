"""Freezer restocking: open the freezer drawer, put the named product inside, close the drawer.

Scene: a chest freezer cabinet at the back of the table (jittered sideways) with a sliding
drawer (slide joint toward the robot, handle bar on its front) under a solid top, and 3-5
products (boxes/cans, distinct random colours) on the table's side areas. Subtasks:
(0) drawer pulled open (or the product already inside), (1) the named product rests in the
drawer, released, (2) the drawer is closed with it inside. Failure: a distractor put in the
drawer, anything falls off the table. The drawer is articulation 0 in the privileged state.
"""

from __future__ import annotations

import numpy as np

from lwd_sim.robot import TABLE_TOP_Z
from lwd_sim.scene import FIXTURE_BITS, OBJ_BITS, Articulation, SceneSpec
from lwd_sim.skills import CLEAR_Z, PlaceSkill, SlideSkill
from lwd_sim.tasks.base import Task, in_box, sample_slots
from lwd_sim.tasks.grocery import assign_products, product_slots

CABINET_X = 0.84
OPEN_Q = 0.17  # drawer travel the expert pulls out [m]
OPEN_ENOUGH = 0.14  # travel that counts as "open" (a product fits through the gap)
CLOSED_Q = 0.012
PULL_AXIS = np.array([-1.0, 0.0, 0.0])  # world direction of increasing drawer travel
# Drawer interior in the drawer body frame: centre and half extents (x, y, z).
INSIDE_CENTER = np.array([-0.008, 0.0, 0.08])
INSIDE_HALF = np.array([0.104, 0.16, 0.065])
HANDLE_LOCAL = (-0.142, 0.0, 0.118)
SIDE_SLOTS = [(x, s * y) for x in (0.40, 0.52, 0.63) for y in (0.27, 0.39) for s in (1.0, -1.0)]
FRONT_SLOTS = [(0.40, 0.0), (0.40, 0.13), (0.40, -0.13)]


def _cabinet_xml() -> str:
    """Cabinet (static) with the drawer body as a child on a slide joint; lengths in metres."""
    f = f'{FIXTURE_BITS} rgba="0.82 0.88 0.95 1"'
    d = f'{OBJ_BITS} rgba="0.7 0.78 0.88 1"'
    return f"""
    <body name="freezer" pos="{CABINET_X} 0 {TABLE_TOP_Z}">
      <geom name="freezer_top" type="box" pos="0 0 0.175" size="0.13 0.205 0.01" {f}/>
      <geom type="box" pos="0 0.195 0.0825" size="0.13 0.01 0.0825" {f}/>
      <geom type="box" pos="0 -0.195 0.0825" size="0.13 0.01 0.0825" {f}/>
      <geom type="box" pos="0.125 0 0.0825" size="0.005 0.185 0.0825" {f}/>
      <body name="drawer" pos="0 0 0">
        <joint name="drawer_slide" type="slide" axis="-1 0 0" range="0 0.2" damping="30" armature="0.5"/>
        <inertial pos="0 0 0.05" mass="1.0" diaginertia="0.02 0.02 0.02"/>
        <geom type="box" pos="-0.008 0 0.015" size="0.112 0.17 0.005" {d}/>
        <geom type="box" pos="-0.12 0 0.075" size="0.008 0.17 0.06" {d}/>
        <geom type="box" pos="0.1 0 0.05" size="0.004 0.17 0.035" {d}/>
        <geom type="box" pos="-0.008 0.165 0.05" size="0.112 0.005 0.035" {d}/>
        <geom type="box" pos="-0.008 -0.165 0.05" size="0.112 0.005 0.035" {d}/>
        <geom name="drawer_handle" type="box" pos="{HANDLE_LOCAL[0]} 0 {HANDLE_LOCAL[2]}" size="0.01 0.06 0.007"
              rgba="0.2 0.2 0.22 1" contype="0" conaffinity="0"/>
      </body>
    </body>"""


class Freezer(Task):
    name = "freezer"
    arm_split_y = 0.065  # between the front slots at y = 0 and y = 0.13 (Task.arm_split_y)
    num_subtasks = 3
    max_steps = 750
    fixtures = ("freezer",)
    wrong_object_subtasks = (1,)

    def scene(self) -> SceneSpec:
        return SceneSpec(
            objects=product_slots(),
            fixtures_xml=_cabinet_xml(),
            articulations=[Articulation("drawer", "drawer_slide", HANDLE_LOCAL)],
        )

    def randomize(self, env, rng: np.random.Generator) -> str:
        env.model.body_pos[env.body["freezer"], 1] = rng.uniform(-0.03, 0.03)
        n = int(rng.integers(3, 6))
        self.products = assign_products(env, rng, n)
        # At most one product in front of the drawer: it must not block the drawer's travel.
        slots = sample_slots(rng, SIDE_SLOTS, n - 1) + sample_slots(rng, FRONT_SLOTS, 1)
        for (slot, _, _), xy in zip(self.products, [slots[i] for i in rng.permutation(n)], strict=True):
            env.place_on_table(slot, xy, float(rng.uniform(-0.3, 0.3)))
        self.target, colour, kind = self.products[int(rng.integers(n))]
        self.distractors = [p[0] for p in self.products if p[0] != self.target]
        self.flags[:] = 0.0
        return f"Open the freezer drawer, put the {colour} {kind} inside and close the drawer."

    def referents(self) -> dict[str, float]:
        return {self.target: 1.0}

    # --- detectors -----------------------------------------------------------------------------
    def in_drawer(self, env, name: str) -> bool:
        """Released inside the drawer walls (drawer frame; the drawer only translates)."""
        local = env.obj_pos(name) - env.obj_pos("drawer")
        return env.holder_of(name) < 0 and in_box(local, INSIDE_CENTER, INSIDE_HALF)

    def conditions(self, env) -> list[bool]:
        q = env.articulation_qpos(0)
        inside = self.in_drawer(env, self.target)
        self.flags[0], self.flags[1] = q, float(inside)
        return [q >= OPEN_ENOUGH or inside, inside, inside and q <= CLOSED_Q]

    def failure(self, env) -> str:
        for name in self.distractors:
            if self.in_drawer(env, name):
                return f"wrong item {name} put in the freezer"
        return ""

    # --- expert ---------------------------------------------------------------------------------
    def _goal(self, name: str):
        def goal(env) -> np.ndarray:
            front = env.obj_pos("drawer")[0] - 0.112  # inner face of the drawer front
            y = float(np.clip(env.home_pose[name][1], -0.08, 0.08))
            z = env.obj_pos("drawer")[2] + 0.02 + env.objspec(name).half_height + 0.006
            return np.array([front + 0.06, env.obj_pos("drawer")[1] + y, z])

        return goal

    def plan(self, env):
        return self._plan(env, self.target)

    def _plan(self, env, product: str):
        # Pull with the arm that will not carry the product: the carrier is the one on the product's side
        # of arm_split_y (skills.default_arm), so the same split decides both and neither flips at y = 0.
        arm = 1 if env.home_pose[product][1] > self.arm_split_y else 0
        return [
            SlideSkill("drawer", 0, PULL_AXIS, OPEN_Q, arm=arm),
            PlaceSkill(product, self._goal(product), clear_z=CLEAR_Z + 0.04),
            SlideSkill("drawer", 0, PULL_AXIS, 0.0, arm=arm, tol=0.008),
        ]

    def wrong_object_plan(self, env, subtask: int, rng: np.random.Generator):
        return self._plan(env, self.distractors[int(rng.integers(len(self.distractors)))])


TASK_CLASS = Freezer
