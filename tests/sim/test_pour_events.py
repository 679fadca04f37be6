"""The pour event: a held container must stay tilted past 70 deg for POUR_TICKS ticks, and pours
into the target it is over when the pour completes. Driven by a scripted container pose, so every
tick's tilt is known exactly (the physics of tilting is covered by the experts' task tests)."""

from __future__ import annotations

import numpy as np

from lwd_sim.tasks import make_task
from lwd_sim.tasks.events import POUR_TICKS, PourTracker


class ScriptedContainer:
    """The part of the env the tracker reads: one held kettle over a teapot, tilt set per tick."""

    active_objects = ("kettle", "teapot")

    def __init__(self) -> None:
        self.up_z = 1.0
        self.held = True

    def obj_up(self, name: str) -> np.ndarray:
        return np.array([0.0, np.sqrt(1 - self.up_z**2), self.up_z])

    def holder_of(self, name: str) -> int:
        return 0 if self.held and name == "kettle" else -1

    def obj_pos(self, name: str) -> np.ndarray:
        return np.array([0.5, 0.0, 1.0]) if name == "kettle" else np.array([0.52, 0.01, 0.8])


def tilt_for(tracker: PourTracker, env: ScriptedContainer, ticks: int, up_z: float) -> list:
    env.up_z = up_z
    return [e for _ in range(ticks) for e in tracker.events(env)]


def test_a_short_tilt_does_not_pour_and_a_held_one_pours_once():
    env, tracker = ScriptedContainer(), PourTracker(("kettle",), ("teapot",))
    tracker.reset()
    tilted = float(np.cos(np.radians(80)))
    assert tilt_for(tracker, env, POUR_TICKS - 1, tilted) == []
    assert tilt_for(tracker, env, 1, 0.9) == []  # back up before the pour completed: the count restarts
    assert tilt_for(tracker, env, POUR_TICKS - 1, tilted) == []
    assert tilt_for(tracker, env, 1, tilted) == [("kettle", "teapot")]
    assert tilt_for(tracker, env, 3 * POUR_TICKS, tilted) == []  # one tilt = one pour
    assert tracker.latched("kettle")
    assert tilt_for(tracker, env, 1, 0.95) == [] and not tracker.latched("kettle")  # upright again re-arms
    assert tilt_for(tracker, env, POUR_TICKS, tilted) == [("kettle", "teapot")]


def test_a_container_nobody_holds_does_not_pour():
    env, tracker = ScriptedContainer(), PourTracker(("kettle",), ("teapot",))
    tracker.reset()
    env.held = False
    assert tilt_for(tracker, env, 2 * POUR_TICKS, 0.0) == []


class NoContainers:
    """An env with nothing that can pour: post_step then only recomputes the flags."""

    active_objects = ()


def test_task_flags_show_each_subtasks_fraction_of_events_done():
    """A subtask of several pours ("fill the three cups") shows how many are done; a second pour
    into a filled cup is unexpected and fails the task."""
    task = make_task("gongfu_tea")
    cups = [("pitcher", "cup0"), ("pitcher", "cup1"), ("pitcher", "cup2")]
    task.begin_events([[("caddy", "teapot")], cups] + [[]] * (task.num_subtasks - 2))
    env = NoContainers()
    task.post_step(env)
    np.testing.assert_allclose(task.flags[:3], [0.0, 0.0, 1.0])
    task._event(env, ("caddy", "teapot"))
    task.index = 1
    task._event(env, ("pitcher", "cup1"))
    task.post_step(env)
    np.testing.assert_allclose(task.flags[:3], [1.0, 1 / 3, 1.0])
    task._event(env, ("pitcher", "cup0"))
    task.post_step(env)
    np.testing.assert_allclose(task.flags[:2], [1.0, 2 / 3])
    assert not task.failed_reason
    task._event(env, ("pitcher", "cup1"))
    assert task.failed_reason == "unexpected pitcher -> cup1"
