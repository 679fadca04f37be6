"""Shoebox (long-horizon, 6 subtasks): unpack the lid, pack the named pair toe-to-heel, paper, lid, shelve.

(0) lid off the box (resting elsewhere)   (1) one shoe of the named pair in the box, parallel to
its long side   (2) the other shoe beside it, toes pointing the opposite way (toe to heel)
(3) tissue paper laid over the shoes   (4) lid back on, square with the box   (5) the box, carried
with both hands (it is heavy), set down square on the mat.
Shoes start at random headings: packing needs re-orienting grasps. Unrecoverable: a shoe of the
distractor pair in the box, paper put in before both shoes, the lid closed on an unfinished
box, anything falling off the table. Shoe pair colours, the box pose and the layout side are
random. Task flags: shoes packed (0-1), paper in (2), lid on (3), box on mat (4).
"""

from __future__ import annotations

import numpy as np

from lwd_sim.robot import TABLE_TOP_Z
from lwd_sim.scene import OBJ_BITS, ObjSpec, SceneSpec
from lwd_sim.skills import BimanualPlaceSkill, OrientedPlaceSkill, wrap_angle, yaw_of
from lwd_sim.tasks.base import PALETTE, Task

SHOE_COLOURS = ("red", "green", "blue", "yellow", "purple", "black")
SHOE_HALF = (0.032, 0.08, 0.022)  # sole + upper; toe along the shoe's +y
SHOE_HEIGHT = 0.066  # sole to the top of the heel collar
INNER = np.array([0.1, 0.14])  # box interior half extents (x, y)
WALL_TOP = 0.085  # above the box body origin (floor centre)
FLOOR_TOP = 0.005
SHOE_X = 0.048  # shoe centres sit at +-SHOE_X across the box
ALIGN = np.sin(np.deg2rad(20))
BOX_HOME = np.array([0.66, 0.0])
MAT = np.array([0.86, 0.0])
PAPER_HOME = np.array([0.44, 0.0])
SHOE_SLOTS = [(0.44, 0.33), (0.64, 0.36), (0.84, 0.36), (0.64, -0.36), (0.84, -0.36)]
LID_SPOT = (0.42, -0.35)


def _box_spec() -> ObjSpec:
    m = OBJ_BITS + ' rgba="0.8 0.42 0.14 1" mass="0.04"'
    hx, hy, t, h = INNER[0], INNER[1], 0.004, (WALL_TOP + 0.005) / 2
    zc = WALL_TOP - h
    walls = (
        f'<geom type="box" pos="{hx + t} 0 {zc}" size="{t} {hy + 2 * t} {h}" {m}/>'
        f'<geom type="box" pos="{-hx - t} 0 {zc}" size="{t} {hy + 2 * t} {h}" {m}/>'
        f'<geom type="box" pos="0 {hy + t} {zc}" size="{hx} {t} {h}" {m}/>'
        f'<geom type="box" pos="0 {-hy - t} {zc}" size="{hx} {t} {h}" {m}/>'
    )
    grip_z = WALL_TOP - 0.012
    return ObjSpec(
        "box",
        "box",
        (hx, hy, 0.005),
        (0.8, 0.42, 0.14, 1),
        mass=0.15,
        heavy=True,
        extra_xml=walls,
        grasp_pair=((0.0, hy + t, grip_z), (0.0, -hy - t, grip_z)),
    )


def _shoe_spec(i: int) -> ObjSpec:
    collar = (
        f'<geom type="box" pos="0 -0.05 0.029" size="0.03 0.028 0.015" rgba="0.95 0.95 0.95 1" mass="0.02" {OBJ_BITS}/>'
    )
    return ObjSpec(f"shoe{i}", "box", SHOE_HALF, PALETTE["white"], mass=0.12, extra_xml=collar)


class Shoebox(Task):
    name = "shoebox"
    num_subtasks = 6
    max_steps = 2400
    wrong_object_subtasks = (1,)

    def scene(self) -> SceneSpec:
        handle = f'<geom type="box" pos="0 0 0.012" size="0.012 0.045 0.008" rgba="0.3 0.16 0.06 1" {OBJ_BITS}/>'
        objects = [
            _box_spec(),
            ObjSpec(
                "lid",
                "box",
                (INNER[0] + 0.014, INNER[1] + 0.014, 0.005),
                (0.5, 0.27, 0.1, 1),
                mass=0.06,
                grasp_local=(0.0, 0.0, 0.012),
                extra_xml=handle,
            ),
            *[_shoe_spec(i) for i in range(4)],
            ObjSpec("paper", "box", (0.06, 0.1, 0.002), (0.97, 0.97, 0.93, 1), mass=0.01, grasp_local=(0, 0, 0)),
        ]
        mat = (
            f'<body name="mat" pos="{MAT[0]} {MAT[1]} {TABLE_TOP_Z + 0.0006}"><geom type="box" '
            f'size="{INNER[0] + 0.02} {INNER[1] + 0.02} 0.0005" rgba="0.15 0.4 0.3 1" contype="0" '
            f'conaffinity="0"/></body>'
        )
        return SceneSpec(objects=objects, fixtures_xml=mat)

    def randomize(self, env, rng: np.random.Generator) -> str:
        m = 1.0 if rng.random() < 0.5 else -1.0
        self.m = m
        box_xy, box_yaw = BOX_HOME + rng.uniform(-0.015, 0.015, 2), float(rng.uniform(-0.2, 0.2))
        env.place_on_table("box", box_xy, box_yaw)
        env.place_on_table("lid", box_xy, box_yaw, TABLE_TOP_Z + 0.001 + FLOOR_TOP + WALL_TOP)
        env.place_on_table("paper", PAPER_HOME + rng.uniform(-0.015, 0.015, 2), float(rng.uniform(-0.2, 0.2)))
        colours = [SHOE_COLOURS[i] for i in rng.permutation(len(SHOE_COLOURS))[:2]]
        slots = [SHOE_SLOTS[i] for i in rng.permutation(len(SHOE_SLOTS))[:4]]
        shoes = [f"shoe{i}" for i in rng.permutation(4)]
        for k, (name, (x, y)) in enumerate(zip(shoes, slots, strict=True)):
            env.place_on_table(
                name, np.array([x, y * m]) + rng.uniform(-0.01, 0.01, 2), float(rng.uniform(-np.pi, np.pi))
            )
            env.set_rgba(name, PALETTE[colours[k // 2]])
        self.pair, self.others = shoes[:2], shoes[2:]
        self.lid_spot = np.array([LID_SPOT[0], LID_SPOT[1] * m])
        self.lid_arm = 1 if m > 0 else 0
        return (
            f"Pack the {colours[0]} shoes: open the shoebox, put the shoes in toe to heel, cover them with the "
            f"tissue paper, close the lid and put the box on the mat."
        )

    def referents(self) -> dict[str, float]:
        return dict.fromkeys(self.pair, 1.0)

    def referent_order(self, env) -> list[str]:
        """The shoe the expert packs next first: the one nearest the box, then the one not yet packed."""
        placed = [s for s in self.pair if self.shoe_packed(env, s)]
        if placed:
            return [s for s in self.pair if s not in placed] + placed
        return self._by_distance_to_box(env, self.pair)

    @staticmethod
    def _by_distance_to_box(env, names: list[str]) -> list[str]:
        box = env.obj_pos("box")[:2]
        return sorted(names, key=lambda s: float(np.linalg.norm(env.obj_pos(s)[:2] - box)))

    # --- geometry in the box frame -------------------------------------------------------------
    def box_local(self, env, p: np.ndarray) -> np.ndarray:
        return env.obj_mat("box").T @ (np.asarray(p) - env.obj_pos("box"))

    def in_box(self, env, name: str) -> bool:
        local = self.box_local(env, env.obj_pos(name))
        return env.holder_of(name) < 0 and bool(np.all(np.abs(local[:2]) < INNER)) and FLOOR_TOP < local[2] < WALL_TOP

    def heading(self, env, name: str) -> float:
        """Shoe heading relative to the box (0: toe toward the box's +y)."""
        return wrap_angle(yaw_of(env.obj_mat(name)) - yaw_of(env.obj_mat("box")))

    def shoe_packed(self, env, name: str) -> bool:
        return self.in_box(env, name) and abs(np.sin(self.heading(env, name))) < ALIGN

    def toe_to_heel(self, env) -> bool:
        a, b = self.pair
        return (
            self.shoe_packed(env, a)
            and self.shoe_packed(env, b)
            and np.cos(self.heading(env, a)) * np.cos(self.heading(env, b)) < 0
        )

    def paper_in(self, env) -> bool:
        return self.in_box(env, "paper") and self.box_local(env, env.obj_pos("paper"))[2] > FLOOR_TOP + 0.03

    def lid_on(self, env) -> bool:
        local = self.box_local(env, env.obj_pos("lid"))
        square = abs(np.sin(yaw_of(env.obj_mat("lid")) - yaw_of(env.obj_mat("box")))) < 0.1
        return (
            env.holder_of("lid") < 0
            and float(np.linalg.norm(local[:2])) < 0.025
            and abs(local[2] - WALL_TOP - 0.005) < 0.012
            and square
        )

    def lid_off(self, env) -> bool:
        local = self.box_local(env, env.obj_pos("lid"))
        return env.holder_of("lid") < 0 and float(np.linalg.norm(local[:2])) > 0.15

    def box_on_mat(self, env) -> bool:
        p = env.obj_pos("box")
        return (
            env.holder_of("box") < 0
            and float(np.linalg.norm(p[:2] - MAT)) < 0.03
            and abs(np.sin(yaw_of(env.obj_mat("box")))) < 0.08
            and env.obj_up("box")[2] > 0.98
        )

    def conditions(self, env) -> list[bool]:
        n_packed = sum(self.shoe_packed(env, s) for s in self.pair)
        pair_done = self.toe_to_heel(env)
        paper = pair_done and self.paper_in(env)
        lid = paper and self.lid_on(env)
        on_mat = lid and self.box_on_mat(env)
        self.flags[0], self.flags[1] = float(n_packed >= 1), float(pair_done)
        self.flags[2], self.flags[3], self.flags[4] = float(paper), float(lid), float(on_mat)
        return [self.lid_off(env) or n_packed > 0, n_packed >= 1, pair_done, paper, lid, on_mat]

    def failure(self, env) -> str:
        for name in self.others:
            if self.in_box(env, name):
                return f"packed a shoe of the wrong pair ({name})"
        if self.index < 3 and self.in_box(env, "paper"):
            return "tissue paper put in before both shoes were packed"
        if 1 <= self.index < 4 and self.lid_on(env):
            return "lid closed on an unfinished box"
        return ""

    # --- expert ---------------------------------------------------------------------------------
    def _shoe_goal(self, env, side: float, toe: float) -> tuple[np.ndarray, float]:
        box, rot = env.obj_pos("box"), env.obj_mat("box")
        centre = box + rot @ np.array([side * SHOE_X, 0.0, FLOOR_TOP + SHOE_HALF[2] + 0.005])
        return centre, yaw_of(rot) + (0.0 if toe > 0 else np.pi)

    def _first_shoe(self, pair: list[str]):
        def select(env):
            # The shoe nearest the box goes first, on the side it comes from, toe the nearer way round.
            name = self._by_distance_to_box(env, pair)[0]
            side = 1.0 if self.box_local(env, env.obj_pos(name))[0] >= 0 else -1.0
            centre, yaw = self._shoe_goal(env, side, np.cos(self.heading(env, name)))
            return name, centre, yaw

        return select

    def _second_shoe(self, pair: list[str]):
        def select(env):
            placed = [s for s in pair if self.shoe_packed(env, s)]
            first = placed[0] if placed else pair[0]
            name = pair[1] if first == pair[0] else pair[0]
            side = -1.0 if self.box_local(env, env.obj_pos(first))[0] >= 0 else 1.0
            centre, yaw = self._shoe_goal(env, side, -np.cos(self.heading(env, first)))
            return name, centre, yaw

        return select

    def _paper(self, env):
        box, rot = env.obj_pos("box"), env.obj_mat("box")
        return "paper", box + rot @ np.array([0.0, 0.0, FLOOR_TOP + SHOE_HEIGHT + 0.008]), yaw_of(rot)

    def _lid(self, env):
        box, rot = env.obj_pos("box"), env.obj_mat("box")
        return "lid", box + rot @ np.array([0.0, 0.0, WALL_TOP + 0.005 + 0.004]), yaw_of(rot)

    def _plan(self, pair: list[str]):
        lid_off = OrientedPlaceSkill(
            lambda env: ("lid", np.array([*self.lid_spot, TABLE_TOP_Z + 0.009]), 0.0),
            arm=self.lid_arm,
            symmetry=np.pi,
            yaw_tol=0.1,
        )
        return [
            lid_off,
            OrientedPlaceSkill(self._first_shoe(pair), yaw_tol=0.05),
            OrientedPlaceSkill(self._second_shoe(pair), yaw_tol=0.05),
            # The paper lies at y ~ 0, where default_arm's side rule would flip with the jitter.
            OrientedPlaceSkill(self._paper, arm=self.lid_arm, symmetry=np.pi),
            OrientedPlaceSkill(self._lid, arm=self.lid_arm, symmetry=np.pi, yaw_tol=0.04),
            BimanualPlaceSkill(
                "box", np.array([*MAT, TABLE_TOP_Z + 0.006 + 0.006]), clear_z=TABLE_TOP_Z + 0.05, yaw=0.0, tol=0.015
            ),
        ]

    def plan(self, env):
        return self._plan(self.pair)

    def wrong_object_plan(self, env, subtask: int, rng: np.random.Generator):
        """Pack one shoe of the distractor pair as the first shoe."""
        plan = self._plan(self.pair)
        plan[1] = OrientedPlaceSkill(self._first_shoe([self.others[int(rng.integers(2))]]), yaw_tol=0.05)
        return plan


TASK_CLASS = Shoebox
