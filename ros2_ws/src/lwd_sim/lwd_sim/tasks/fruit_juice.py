"""Fruit Juice (long-horizon, 7 subtasks): board, two cuts with a knife, juicer lid, fruit in, lid, knob.

(0) the named fruit rests on the cutting board   (1) first cut   (2) second cut (pieces)
(3) juicer lid taken off   (4) the cut fruit rests in the juicer chamber   (5) lid back on
(6) juicer started: its knob turned past ON.
Cutting abstraction: the knife is a tool (collides with fixtures only); a cut is counted when
the held knife's blade edge passes below a fruit's centre with the blade plane through the
fruit; the blade re-arms once lifted above the fruit. A cut fruit turns paler (visible progress).
Unrecoverable: cutting a distractor fruit or the fruit off the board, a wrong or uncut fruit in
the juicer, starting the juicer open or empty, anything falling off the table. 2-3 fruits of
random identity (colour) and size; the layout is mirrored at random with jittered poses.
The knob is articulation 0. Task flags: cuts/2, blade armed, lid on juicer, fruit in juicer.
"""

from __future__ import annotations

import numpy as np

from lwd_sim.robot import TABLE_TOP_Z
from lwd_sim.scene import FIXTURE_BITS, OBJ_BITS, TOOL_BITS, Articulation, ObjSpec, SceneSpec
from lwd_sim.skills import CutSkill, PlaceSkill, TurnSkill
from lwd_sim.tasks.base import PALETTE, Task, in_box

FRUITS = {"orange": "orange", "apple": "red", "lemon": "yellow", "lime": "green", "plum": "purple"}
FRUIT_SIZES = ((0.033, 0.03), (0.031, 0.029), (0.029, 0.027))  # (radius, half height) per slot
FRUIT_SLOTS = [(0.42, 0.27), (0.42, 0.38), (0.54, 0.27), (0.54, 0.38), (0.66, 0.31)]
BOARD_HALF = np.array([0.085, 0.085, 0.008])
BLADE_EDGE = np.array([0.0, 0.09, -0.015])  # blade edge centre in the knife frame
BLADE_HALF_LEN = 0.045
CUTS_NEEDED = 2
# Juicer (body frame at the table under its base centre): chamber and knob positions.
CHAMBER = np.array([0.03, 0.0, 0.08])  # chamber floor centre
CHAMBER_HALF = 0.05
RIM_Z = 0.14
KNOB = np.array([-0.07, 0.0, 0.08])
KNOB_ON = 1.3  # [rad]
KNOB_TARGET = 1.6


def _fixtures_xml() -> str:
    j = f'{FIXTURE_BITS} rgba="0.9 0.9 0.88 1"'
    c = CHAMBER
    h, t, wz, wh = CHAMBER_HALF, 0.006, (c[2] + RIM_Z) / 2, (RIM_Z - c[2]) / 2
    return f"""
    <body name="board" pos="0.54 0 {TABLE_TOP_Z + BOARD_HALF[2]}">
      <geom type="box" size="{BOARD_HALF[0]} {BOARD_HALF[1]} {BOARD_HALF[2]}" rgba="0.62 0.42 0.22 1" {FIXTURE_BITS}/>
    </body>
    <body name="juicer" pos="0.78 -0.24 {TABLE_TOP_Z}">
      <geom type="box" pos="0 0 0.04" size="0.1 0.075 0.04" rgba="0.35 0.36 0.42 1" {FIXTURE_BITS}/>
      <geom type="box" pos="{c[0] + h + t} 0 {wz}" size="{t} {h + 2 * t} {wh}" {j}/>
      <geom type="box" pos="{c[0] - h - t} 0 {wz}" size="{t} {h + 2 * t} {wh}" {j}/>
      <geom type="box" pos="{c[0]} {h + t} {wz}" size="{h} {t} {wh}" {j}/>
      <geom type="box" pos="{c[0]} {-h - t} {wz}" size="{h} {t} {wh}" {j}/>
      <body name="knob" pos="{KNOB[0]} {KNOB[1]} {KNOB[2]}">
        <joint name="knob_hinge" type="hinge" axis="0 0 1" range="0 2.4" damping="0.3" armature="0.002"/>
        <inertial pos="0 0 0.01" mass="0.05" diaginertia="1e-4 1e-4 1e-4"/>
        <geom type="cylinder" pos="0 0 0.012" size="0.017 0.012" rgba="0.15 0.15 0.15 1" contype="0" conaffinity="0"/>
        <geom type="box" pos="0.009 0 0.025" size="0.009 0.003 0.002" rgba="0.95 0.2 0.1 1" contype="0"
              conaffinity="0"/>
      </body>
    </body>"""


def _blend(rgba: tuple[float, ...], amount: float) -> tuple[float, ...]:
    """Mix a colour toward pale flesh (a cut fruit shows its inside)."""
    flesh = np.array([0.98, 0.93, 0.7, 1.0])
    return tuple((1 - amount) * np.asarray(rgba) + amount * flesh)


class FruitJuice(Task):
    name = "fruit_juice"
    num_subtasks = 7
    max_steps = 2700
    fixtures = ("board", "juicer")
    wrong_object_subtasks = (1,)

    def scene(self) -> SceneSpec:
        fruits = [
            ObjSpec(f"fruit{i}", "cylinder", size, PALETTE["white"], mass=0.12) for i, size in enumerate(FRUIT_SIZES)
        ]
        blade = (
            f'<geom name="knife_blade" type="box" pos="0 {BLADE_EDGE[1]} 0" size="0.0015 {BLADE_HALF_LEN} 0.015" '
            f'rgba="0.8 0.82 0.85 1" mass="0.03" {TOOL_BITS}/>'
        )
        knife = ObjSpec(
            "knife", "box", (0.01, 0.045, 0.015), (0.15, 0.1, 0.08, 1), mass=0.08, tool=True, extra_xml=blade
        )
        handle = (
            f'<geom type="box" pos="0 0 0.013" size="0.01 0.03 0.008" rgba="0.3 0.45 0.6 1" mass="0.01" {OBJ_BITS}/>'
        )
        lid = ObjSpec(
            "lid",
            "box",
            (0.064, 0.064, 0.005),
            (0.55, 0.75, 0.9, 1),
            mass=0.08,
            grasp_local=(0, 0, 0.014),
            extra_xml=handle,
        )
        return SceneSpec(
            objects=[*fruits, knife, lid],
            fixtures_xml=_fixtures_xml(),
            articulations=[Articulation("knob", "knob_hinge", (0.0, 0.0, 0.018))],
        )

    def randomize(self, env, rng: np.random.Generator) -> str:
        m = 1.0 if rng.random() < 0.5 else -1.0
        self.side_arm = 1 if m > 0 else 0  # the arm on the knife/juicer side
        j = lambda s=0.015: rng.uniform(-s, s, 2)  # noqa: E731
        self.board_xy = np.array([0.54, 0.0]) + j(0.02)
        self.juicer_xy = np.array([0.78, -0.24 * m]) + j()
        env.model.body_pos[env.body["board"], :2] = self.board_xy
        env.model.body_pos[env.body["juicer"], :2] = self.juicer_xy
        n = int(rng.integers(2, 4))
        names = list(FRUITS)
        kinds = [names[i] for i in rng.permutation(len(names))[:n]]
        slots = [FRUIT_SLOTS[i] for i in rng.permutation(len(FRUIT_SLOTS))[:n]]
        self.fruits = [f"fruit{i}" for i in rng.permutation(3)[:n]]
        self.base_rgba = {}
        for name, kind, (x, y) in zip(self.fruits, kinds, slots, strict=True):
            env.place_on_table(name, np.array([x, y * m]) + j())
            self.base_rgba[name] = PALETTE[FRUITS[kind]]
            env.set_rgba(name, self.base_rgba[name])
        knife_yaw = (0.0 if m > 0 else np.pi) + rng.uniform(-0.2, 0.2)  # blade toward the board
        env.place_on_table("knife", np.array([0.40, -0.22 * m]) + j(), knife_yaw)
        chamber = self.chamber_center()
        env.place_on_table("lid", chamber[:2], 0.0, TABLE_TOP_Z + RIM_Z)
        self.lid_spot = np.array([0.58, -0.34 * m]) + j(0.01)
        k = int(rng.integers(n))
        self.target = self.fruits[k]
        self.distractors = [f for f in self.fruits if f != self.target]
        self.cuts = {f: 0 for f in self.fruits}
        self.blade_armed = True
        self.cut_failure = ""
        return (
            f"Make {kinds[k]} juice: cut the {kinds[k]} on the board, put the pieces in the juicer, close the lid "
            f"and start the juicer."
        )

    def referents(self) -> dict[str, float]:
        return {self.target: 1.0}

    # --- detectors -----------------------------------------------------------------------------
    def chamber_center(self) -> np.ndarray:
        return np.array([*(self.juicer_xy + CHAMBER[:2]), TABLE_TOP_Z + CHAMBER[2]])

    def on_board(self, env, name: str) -> bool:
        p = env.obj_pos(name)
        z_ok = abs(p[2] - (TABLE_TOP_Z + 2 * BOARD_HALF[2] + env.objspec(name).half_height)) < 0.015
        return env.holder_of(name) < 0 and z_ok and in_box(p[:2], self.board_xy, BOARD_HALF[:2])

    def in_juicer(self, env, name: str) -> bool:
        p = env.obj_pos(name) - self.chamber_center()
        return env.holder_of(name) < 0 and in_box(
            p, np.array([0.0, 0.0, 0.04]), np.array([CHAMBER_HALF, CHAMBER_HALF, 0.045])
        )

    def lid_on(self, env) -> bool:
        p = env.obj_pos("lid") - self.chamber_center()
        return (
            env.holder_of("lid") < 0
            and float(np.linalg.norm(p[:2])) < 0.02
            and abs(p[2] - (RIM_Z - CHAMBER[2] + 0.005)) < 0.01
            and env.obj_up("lid")[2] > 0.95
        )

    def lid_off(self, env) -> bool:
        p = env.obj_pos("lid") - self.chamber_center()
        return env.holder_of("lid") < 0 and float(np.linalg.norm(p[:2])) > 0.1

    def post_step(self, env) -> None:
        if env.holder_of("knife") < 0:
            return
        rot = env.obj_mat("knife")
        kpos = env.obj_pos("knife")
        edge_z = float((kpos + rot @ BLADE_EDGE)[2])
        lifted = True
        for name in self.fruits:
            f = env.obj_pos(name)
            r, hh = env.objspec(name).size[:2]
            local = rot.T @ (f - kpos)
            through = abs(local[0]) < r - 0.004 and abs(local[1] - BLADE_EDGE[1]) < BLADE_HALF_LEN + 0.01
            if not through:
                continue
            lifted = lifted and edge_z > f[2] + hh + 0.01
            if self.blade_armed and edge_z < f[2]:
                self._cut(env, name)
        if lifted:
            self.blade_armed = True
        self.flags[1] = float(self.blade_armed)

    def _cut(self, env, name: str) -> None:
        self.blade_armed = False
        self.cuts[name] += 1
        env.set_rgba(name, _blend(self.base_rgba[name], min(1.0, 0.35 * self.cuts[name])))
        if name != self.target:
            self.cut_failure = self.cut_failure or f"cut the wrong fruit ({name})"
        elif not self.on_board(env, name):
            self.cut_failure = self.cut_failure or "cut the fruit off the cutting board"

    def conditions(self, env) -> list[bool]:
        cuts = self.cuts[self.target]
        inside = self.in_juicer(env, self.target)
        lid_on = self.lid_on(env)
        self.flags[0], self.flags[2], self.flags[3] = cuts / CUTS_NEEDED, float(lid_on), float(inside)
        return [
            self.on_board(env, self.target) or cuts > 0,
            cuts >= 1,
            cuts >= CUTS_NEEDED,
            self.lid_off(env) and cuts >= CUTS_NEEDED,
            inside,
            inside and lid_on,
            env.articulation_qpos(0) >= KNOB_ON,
        ]

    def failure(self, env) -> str:
        if self.cut_failure:
            return self.cut_failure
        for name in self.distractors:
            if self.in_juicer(env, name):
                return f"wrong fruit ({name}) in the juicer"
        if self.in_juicer(env, self.target) and self.cuts[self.target] < CUTS_NEEDED:
            return "whole fruit jammed the juicer"
        if env.articulation_qpos(0) >= KNOB_ON and not (self.lid_on(env) and self.in_juicer(env, self.target)):
            return "juicer started open or empty"
        return ""

    # --- expert ---------------------------------------------------------------------------------
    def _plan(self, fruit: str, cut_fruit: str | None = None):
        chamber = self.chamber_center()
        lid_z = TABLE_TOP_Z + RIM_Z + 0.005 + 0.004
        side, other = self.side_arm, 1 - self.side_arm

        def board_goal(env) -> np.ndarray:
            return np.array([*self.board_xy, TABLE_TOP_Z + 2 * BOARD_HALF[2] + env.objspec(fruit).half_height + 0.005])

        def chamber_goal(env) -> np.ndarray:
            return chamber + np.array([0.0, 0.0, env.objspec(fruit).half_height + 0.006])

        def cut(n: int) -> CutSkill:
            victim = cut_fruit or fruit
            return CutSkill(
                "knife", victim, tuple(BLADE_EDGE), n, lambda: self.cuts[victim], lambda: self.blade_armed, arm=side
            )

        return [
            PlaceSkill(fruit, board_goal, arm=other),
            cut(1),
            cut(CUTS_NEEDED),
            PlaceSkill("lid", np.array([*self.lid_spot, TABLE_TOP_Z + 0.005 + 0.004]), arm=side),
            PlaceSkill(fruit, chamber_goal, arm=side),
            PlaceSkill("lid", np.array([chamber[0], chamber[1], lid_z]), arm=side),
            TurnSkill("knob", 0, KNOB_TARGET, arm=side),
        ]

    def plan(self, env):
        return self._plan(self.target)

    def wrong_object_plan(self, env, subtask: int, rng: np.random.Generator):
        """Put the right fruit on the board but chop a distractor (wherever it lies)."""
        return self._plan(self.target, cut_fruit=self.distractors[int(rng.integers(len(self.distractors)))])


TASK_CLASS = FruitJuice
