"""Cocktail (long-horizon, 6 subtasks): measure two named liquors, ice, shake, pour, garnish.

(0) first named liquor -> shaker   (1) second named liquor -> shaker   (2) ice bucket -> shaker
(3) shake the shaker (counted up/down strokes while held high)   (4) shaker -> stemmed glass
(5) garnish: the cherry rests on the glass.
3-4 liquor bottles of distinct random colours stand in a back row (random slots); the instruction
names two of them, in order. Any pour out of this order (wrong liquor, ice too early, an
unshaken drink, a spill onto the table) is unrecoverable, and so is a cherry on an empty glass.
The layout is mirrored left/right at random with jittered poses. Task flags: subtask events
done (0-5), shake progress (6); referents: first liquor 1, second 2.
"""

from __future__ import annotations

import numpy as np

from lwd_sim.robot import TABLE_TOP_Z
from lwd_sim.scene import FIXTURE_BITS, ObjSpec, SceneSpec
from lwd_sim.skills import PlaceSkill, PourSkill, ShakeSkill
from lwd_sim.tasks.base import PALETTE
from lwd_sim.tasks.pour_task import EventTask

LIQUOR_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
BOTTLE_SLOTS_Y = (-0.34, -0.17, 0.0, 0.17, 0.34)
BOTTLE_X = 0.76
GLASS_TOP = TABLE_TOP_Z + 0.13  # rim of the stemmed glass's bowl
GLASS_RADIUS = 0.035
SHAKES_NEEDED = 6  # up/down strokes
SHAKE_STROKE = 0.06  # [m] a stroke is a vertical reversal after at least this travel
SHAKE_MIN_Z = TABLE_TOP_Z + 0.15  # shaker bottom must be this high for strokes to count


def _glass_xml() -> str:
    """Stemmed glass (static): foot, stem, bowl; the body frame sits on the bowl's rim."""
    g = f'{FIXTURE_BITS} rgba="0.85 0.92 0.97 1"'
    return f"""
    <body name="glass" pos="0.66 -0.22 {GLASS_TOP}">
      <geom type="cylinder" pos="0 0 -0.127" size="0.035 0.003" {g}/>
      <geom type="cylinder" pos="0 0 -0.09" size="0.006 0.035" {g}/>
      <geom name="glass_bowl" type="cylinder" pos="0 0 -0.027" size="{GLASS_RADIUS} 0.027" {g}/>
    </body>"""


class Cocktail(EventTask):
    name = "cocktail"
    arm_split_y = 0.085  # between the bottle slots at y = 0 and y = 0.17 (Task.arm_split_y)
    num_subtasks = 6
    max_steps = 2400
    fixtures = ("glass",)
    pour_sources = ("bottle0", "bottle1", "bottle2", "bottle3", "ice", "shaker")
    pour_targets = ("shaker", "glass")
    wrong_object_subtasks = (0, 1)

    def scene(self) -> SceneSpec:
        bottles = [ObjSpec(f"bottle{i}", "cylinder", (0.026, 0.075), PALETTE["white"], mass=0.35) for i in range(4)]
        objects = [
            *bottles,
            ObjSpec("shaker", "cylinder", (0.034, 0.065), (0.75, 0.76, 0.8, 1), mass=0.3),
            ObjSpec("ice", "cylinder", (0.036, 0.04), (0.7, 0.9, 1.0, 1), mass=0.2),
            ObjSpec("cherry", "cylinder", (0.013, 0.013), (0.7, 0.02, 0.1, 1), mass=0.02, grasp_local=(0, 0, 0)),
        ]
        return SceneSpec(objects=objects, fixtures_xml=_glass_xml())

    def randomize(self, env, rng: np.random.Generator) -> str:
        m = self.randomize_mirror(rng)
        j = lambda: rng.uniform(-0.015, 0.015, 2)  # noqa: E731
        n = int(rng.integers(3, 5))
        self.bottles = [f"bottle{i}" for i in range(n)]
        colours = [LIQUOR_COLOURS[i] for i in rng.permutation(len(LIQUOR_COLOURS))[:n]]
        slots = [BOTTLE_SLOTS_Y[i] for i in rng.permutation(len(BOTTLE_SLOTS_Y))[:n]]
        for name, colour, y in zip(self.bottles, colours, slots, strict=True):
            env.place_on_table(name, np.array([BOTTLE_X, y]) + j())
            env.set_rgba(name, PALETTE[colour])
        env.place_on_table("shaker", np.array([0.52, 0.04 * m]) + j())
        env.place_on_table("ice", np.array([0.44, 0.30 * m]) + j())
        env.place_on_table("cherry", np.array([0.44, -0.32 * m]) + j())
        self.glass_xy = np.array([0.64, -0.2 * m]) + j()
        env.model.body_pos[env.body["glass"], :2] = self.glass_xy
        pick = rng.permutation(n)[:2]
        self.liquors = [self.bottles[i] for i in pick]
        self.mix_rgba = np.mean([PALETTE[colours[i]] for i in pick], axis=0)
        env.set_geom_rgba("glass_bowl", (0.85, 0.92, 0.97, 1.0))
        self.shakes = 0
        self._shake_extreme: float | None = None
        self._shake_dir = 0
        self.begin_events(
            [
                [(self.liquors[0], "shaker")],
                [(self.liquors[1], "shaker")],
                [("ice", "shaker")],
                [],
                [("shaker", "glass")],
                [],
            ]
        )
        return (
            f"Make a cocktail: pour the {colours[pick[0]]} liquor and then the {colours[pick[1]]} liquor into the "
            f"shaker, add ice, shake it, pour it into the glass and garnish with the cherry."
        )

    def referents(self) -> dict[str, float]:
        return {self.liquors[0]: 1.0, self.liquors[1]: 2.0}

    def referent_order(self, env) -> list[str]:
        """The liquor to pour next first: the second liquor takes the first slot once the first is in."""
        return list(self.liquors) if self.index < 1 else [self.liquors[1], self.liquors[0]]

    # --- events ---------------------------------------------------------------------------------
    def post_step(self, env) -> None:
        super().post_step(env)
        if self.index == 3:
            self._count_shakes(env)
        if not self.pending[4]:
            env.set_geom_rgba("glass_bowl", tuple(self.mix_rgba))
        self.flags[3] = float(self.shakes >= SHAKES_NEEDED)  # the event flags leave event-less subtasks at 1
        self.flags[6] = min(self.shakes, SHAKES_NEEDED) / SHAKES_NEEDED

    def _count_shakes(self, env) -> None:
        """A stroke = the held, raised shaker reverses vertically after travelling >= SHAKE_STROKE."""
        z = float(env.obj_pos("shaker")[2])
        if env.holder_of("shaker") < 0 or z - env.objspec("shaker").half_height < SHAKE_MIN_Z:
            self._shake_extreme, self._shake_dir = None, 0
            return
        if self._shake_extreme is None:
            self._shake_extreme = z
            return
        travel = z - self._shake_extreme
        if self._shake_dir == 0:
            if abs(travel) >= SHAKE_STROKE:
                self._shake_dir, self._shake_extreme = int(np.sign(travel)), z
        elif travel * self._shake_dir > 0:
            self._shake_extreme = z  # still going the same way: extend the stroke
        elif abs(travel) >= SHAKE_STROKE:
            self.shakes += 1
            self._shake_dir, self._shake_extreme = -self._shake_dir, z

    def _garnished(self, env) -> bool:
        p = env.obj_pos("cherry")
        near = float(np.linalg.norm(p[:2] - self.glass_xy)) < GLASS_RADIUS
        return near and env.holder_of("cherry") < 0 and p[2] > GLASS_TOP and p[2] < GLASS_TOP + 0.04

    def conditions(self, env) -> list[bool]:
        self.flags[5] = float(self._garnished(env))
        return [
            self.done_events(0),
            self.done_events(1),
            self.done_events(2),
            self.shakes >= SHAKES_NEEDED,
            self.done_events(4),
            self._garnished(env),
        ]

    def failure(self, env) -> str:
        if self.index <= 3 and self.done_events(4):
            return "poured the cocktail before it was mixed and shaken"
        return ""

    # --- expert ---------------------------------------------------------------------------------
    def _plan(self, env, liquors: list[str]):
        return [
            PourSkill(liquors[0], "shaker"),
            PourSkill(liquors[1], "shaker"),
            PourSkill("ice", "shaker"),
            ShakeSkill("shaker", tuple(env.home_pose["shaker"][:2])),
            PourSkill("shaker", "glass", height=0.06),
            PlaceSkill("cherry", lambda env: np.array([*self.glass_xy, GLASS_TOP + 0.013 + 0.004])),
        ]

    def plan(self, env):
        return self._plan(env, self.liquors)

    def wrong_object_plan(self, env, subtask: int, rng: np.random.Generator):
        others = [b for b in self.bottles if b not in self.liquors]
        liquors = list(self.liquors)
        liquors[subtask] = others[int(rng.integers(len(others)))] if others else liquors[1 - subtask]
        return self._plan(env, liquors)


TASK_CLASS = Cocktail
