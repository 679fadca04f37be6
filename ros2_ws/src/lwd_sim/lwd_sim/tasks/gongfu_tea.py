"""Gongfu Tea (long-horizon, 7 subtasks, ~1000+ steps): every step is a pour or a placement.

(0) tea leaves: caddy -> teapot   (1) rinse: kettle -> teapot   (2) drain: teapot -> waste bowl
(3) brew: kettle -> teapot   (4) teapot -> fairness pitcher   (5) pitcher -> all three cups
(6) serve the cup named in the instruction onto the tray.
Any pour out of this order (water on dry pot, unrinsed tea served...) is unrecoverable, as is
serving the wrong cup. The layout is mirrored left/right at random, with jittered poses and
random cup colours.
"""

from __future__ import annotations

import numpy as np

from lwd_sim.robot import TABLE_TOP_Z
from lwd_sim.scene import FIXTURE_BITS, ObjSpec, SceneSpec
from lwd_sim.skills import PlaceSkill, PourSkill
from lwd_sim.tasks.base import PALETTE, in_box
from lwd_sim.tasks.pour_task import EventTask

CUP_COLOURS = ("red", "blue", "yellow", "green", "purple", "white")
TRAY_HALF = np.array([0.07, 0.07])


class GongfuTea(EventTask):
    name = "gongfu_tea"
    num_subtasks = 7
    max_steps = 2700
    fixtures = ("waste_bowl", "tray")
    pour_sources = ("caddy", "kettle", "teapot", "pitcher")
    pour_targets = ("teapot", "waste_bowl", "pitcher", "cup0", "cup1", "cup2")
    wrong_object_subtasks = (6,)

    def scene(self) -> SceneSpec:
        objects = [
            ObjSpec("caddy", "cylinder", (0.028, 0.045), (0.2, 0.5, 0.25, 1)),
            ObjSpec("kettle", "cylinder", (0.045, 0.075), (0.6, 0.62, 0.66, 1), mass=0.4),
            ObjSpec("teapot", "cylinder", (0.045, 0.05), (0.55, 0.27, 0.18, 1), mass=0.3),
            ObjSpec("pitcher", "cylinder", (0.038, 0.055), (0.8, 0.9, 0.95, 1)),
            *[ObjSpec(f"cup{i}", "cylinder", (0.026, 0.03), PALETTE["white"], mass=0.08) for i in range(3)],
        ]
        fixtures = (
            f'<body name="waste_bowl" pos="0.78 0.18 {TABLE_TOP_Z + 0.05}">'
            f'<geom type="cylinder" pos="0 0 -0.025" size="0.06 0.025" rgba="0.3 0.3 0.35 1" '
            f"{FIXTURE_BITS}/></body>"
            f'<body name="tray" pos="0.78 -0.28 {TABLE_TOP_Z + 0.005}">'
            f'<geom type="box" size="{TRAY_HALF[0]} {TRAY_HALF[1]} 0.005" rgba="0.35 0.2 0.1 1" '
            f"{FIXTURE_BITS}/></body>"
        )
        return SceneSpec(objects=objects, fixtures_xml=fixtures)

    def randomize(self, env, rng: np.random.Generator) -> str:
        m = self.randomize_mirror(rng)
        j = lambda: rng.uniform(-0.015, 0.015, 2)  # noqa: E731
        env.place_on_table("caddy", np.array([0.44, 0.32 * m]) + j())
        env.place_on_table("kettle", np.array([0.62, 0.33 * m]) + j())
        env.place_on_table("teapot", np.array([0.58, 0.10 * m]) + j())
        env.place_on_table("pitcher", np.array([0.60, -0.10 * m]) + j())
        colours = rng.permutation(len(CUP_COLOURS))[:3]
        for i, ci in enumerate(colours):
            env.place_on_table(f"cup{i}", np.array([0.42 + 0.11 * i, -0.32 * m]) + j())
            env.set_rgba(f"cup{i}", PALETTE[CUP_COLOURS[ci]])
        self._fixture(env, "waste_bowl", np.array([0.78, 0.18 * m]))
        self._fixture(env, "tray", np.array([0.78, -0.28 * m]))
        self.tray_xy = np.array([0.78, -0.28 * m])
        serve = int(rng.integers(3))
        self.serve_cup = f"cup{serve}"
        self.other_cups = [f"cup{i}" for i in range(3) if i != serve]
        cups = [("pitcher", f"cup{i}") for i in range(3)]
        self.begin_events(
            [
                [("caddy", "teapot")],
                [("kettle", "teapot")],
                [("teapot", "waste_bowl")],
                [("kettle", "teapot")],
                [("teapot", "pitcher")],
                cups,
                [],
            ]
        )
        return (
            f"Brew gongfu tea: add tea leaves, rinse and drain, brew, pour into the pitcher, fill the three "
            f"cups and serve the {CUP_COLOURS[colours[serve]]} cup on the tray."
        )

    def referents(self) -> dict[str, float]:
        return {self.serve_cup: 1.0}

    @staticmethod
    def _fixture(env, body: str, xy: np.ndarray) -> None:
        b = env.body[body]
        env.model.body_pos[b, :2] = xy

    def _on_tray(self, env, cup: str) -> bool:
        return (
            in_box(env.obj_pos(cup)[:2], self.tray_xy, TRAY_HALF)
            and env.holder_of(cup) < 0
            and env.obj_pos(cup)[2] < TABLE_TOP_Z + 0.06
        )

    def conditions(self, env) -> list[bool]:
        return [*[self.done_events(k) for k in range(6)], self._on_tray(env, self.serve_cup)]

    def failure(self, env) -> str:
        for cup in self.other_cups:
            if self._on_tray(env, cup):
                return f"served the wrong cup ({cup})"
        return ""

    def _serve(self, cup: str) -> PlaceSkill:
        return PlaceSkill(cup, lambda env: np.array([*self.tray_xy, TABLE_TOP_Z + 0.01 + 0.036]))

    def plan(self, env):
        return [
            PourSkill("caddy", "teapot"),
            PourSkill("kettle", "teapot"),
            PourSkill("teapot", "waste_bowl"),
            PourSkill("kettle", "teapot"),
            PourSkill("teapot", "pitcher"),
            PourSkill("pitcher", self.first_pending_target(5, "pitcher")),
            self._serve(self.serve_cup),
        ]

    def wrong_object_plan(self, env, subtask: int, rng: np.random.Generator):
        plan = self.plan(env)
        plan[6] = self._serve(self.other_cups[int(rng.integers(2))])
        return plan


TASK_CLASS = GongfuTea
