"""Reactive manipulation skills the scripted experts chain, one per subtask.

Every skill maps the *current* sim state to end-effector targets (no stored trajectory), so an
expert can take over from any state: if the needed object is not held it goes to grasp it, if
an arm holds something the skill does not need it first puts that back where it came from.
Motion between places follows lift -> travel at a clearance height -> descend.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lwd_sim.grasp import CLOSE_BELOW
from lwd_sim.ik import axis_rotation, down_rotation
from lwd_sim.robot import GRIPPER_CLOSED, GRIPPER_OPEN, TABLE_TOP_Z

CLEAR_Z = TABLE_TOP_Z + 0.24  # default height the bottom of a carried object travels at
DOWN = down_rotation()


@dataclass
class ArmCommand:
    """Grasp-site target pose and gripper target; pos None = return to the home posture."""

    pos: np.ndarray | None
    rot: np.ndarray = field(default_factory=lambda: DOWN)
    gripper: float = GRIPPER_OPEN


def site_pos(env, arm: int) -> np.ndarray:
    return env.data.site_xpos[env.grasp_site[arm]].copy()


def gripper_opening(env, arm: int) -> float:
    return float(env.data.qpos[env._qpos_adr[arm * 8 + 7]])


def hanging_depth(env, arm: int) -> float:
    """Vertical distance from the grasp site down to the bottom of what the arm holds (0 if empty)."""
    name = env.held_name(arm)
    if name is None or name not in env.obj_index:
        return 0.0
    bottom = env.obj_pos(name)[2] - env.objspec(name).half_height
    return max(0.0, site_pos(env, arm)[2] - bottom)


def waypoint(env, arm: int, goal: np.ndarray, clear_z: float = CLEAR_Z, xy_tol: float = 0.02) -> np.ndarray:
    """Next site target on a lift / travel / descend path to `goal`."""
    cur = site_pos(env, arm)
    travel_z = max(clear_z + hanging_depth(env, arm), goal[2])
    dxy = float(np.linalg.norm(goal[:2] - cur[:2]))
    if dxy <= xy_tol:
        return goal
    if cur[2] < travel_z - 0.03 and dxy > 0.05:
        return np.array([cur[0] + 0.1 * (goal[0] - cur[0]), cur[1] + 0.1 * (goal[1] - cur[1]), travel_z])
    return np.array([goal[0], goal[1], travel_z])


def yaw_of(mat: np.ndarray) -> float:
    """Heading of a frame's x axis in the world xy plane (the yaw of an upright object or a down-facing hand)."""
    return float(np.arctan2(mat[1, 0], mat[0, 0]))


def wrap_angle(angle: float, period: float = 2 * np.pi) -> float:
    """`angle` wrapped into [-period/2, period/2) (period pi for objects that look the same turned around)."""
    return float((angle + period / 2) % period - period / 2)


def default_arm(env, name: str) -> int:
    """The arm holding `name`, else the one on its side of the task's ``arm_split_y``."""
    holder = env.holder_of(name)
    if holder >= 0:
        return holder
    return 0 if env.grasp_point(name, 0)[1] > env.task.arm_split_y else 1


def pick(env, arm: int, name: str, clear_z: float = CLEAR_Z) -> ArmCommand:
    """Go to the grasp point with an open gripper, close when there."""
    gp = env.grasp_point(name, arm)
    d = float(np.linalg.norm(gp - site_pos(env, arm)))
    closing = gripper_opening(env, arm) < GRIPPER_OPEN - 0.01
    close = d < 0.012 or (closing and d < 0.025 and env.held_name(arm) is None)
    return ArmCommand(waypoint(env, arm, gp, clear_z), DOWN, GRIPPER_CLOSED if close else GRIPPER_OPEN)


def place(
    env,
    arm: int,
    name: str,
    goal_center: np.ndarray,
    clear_z: float = CLEAR_Z,
    tol: float = 0.015,
    rot: np.ndarray = DOWN,
) -> ArmCommand:
    """Carry the held `name` so its centre reaches `goal_center`, then open."""
    obj = env.obj_pos(name)
    site = site_pos(env, arm)
    goal_site = goal_center + (site - obj)
    release = float(np.linalg.norm(obj - goal_center)) < tol
    return ArmCommand(waypoint(env, arm, goal_site, clear_z), rot, GRIPPER_OPEN if release else GRIPPER_CLOSED)


def stow(env, arm: int) -> ArmCommand:
    """Put back whatever the arm holds (free objects to their start pose; handles are let go)."""
    name = env.held_name(arm)
    if name is None or name not in env.home_pose:
        return ArmCommand(site_pos(env, arm) + np.array([0.0, 0.0, 0.01]), DOWN, GRIPPER_OPEN)
    return place(env, arm, name, env.home_pose[name] + np.array([0.0, 0.0, 0.004]))


class Skill:
    """One subtask's behaviour: `command` returns targets for the arms it drives."""

    uses: tuple[str, ...] = ()  # objects this skill may hold (others get stowed)

    def command(self, env, memory: dict) -> dict[int, ArmCommand]:
        raise NotImplementedError

    def carry_object(self) -> str | None:
        """Object being carried while this skill runs (where a 'drop' mistake applies)."""
        return self.uses[0] if self.uses else None


def _busy_with_other(env, arm: int, wanted: tuple[str, ...]) -> bool:
    held = env.held_name(arm)
    return held is not None and held not in wanted


def acquire(env, name: str, preferred_arm: int | None, uses: tuple[str, ...], clear_z: float):
    """Pick the arm for object `name` and, until it holds the object, the command that gets it there.

    Returns (arm, command): command is a stow (the arm holds something else) or a pick, and None once
    the arm holds `name` and the skill can do its own work.
    """
    arm = env.holder_of(name)
    if arm < 0:
        arm = preferred_arm if preferred_arm is not None else default_arm(env, name)
    if _busy_with_other(env, arm, uses):
        return arm, stow(env, arm)
    if env.holder_of(name) != arm:
        return arm, pick(env, arm, name, clear_z)
    return arm, None


class PlaceSkill(Skill):
    """Pick `name` and place its centre at `goal` (a fixed point or a callable of env)."""

    def __init__(self, name: str, goal, arm: int | None = None, clear_z: float = CLEAR_Z) -> None:
        self.name, self.goal, self.arm, self.clear_z = name, goal, arm, clear_z
        self.uses = (name,)

    def command(self, env, memory: dict) -> dict[int, ArmCommand]:
        arm, pending = acquire(env, self.name, self.arm, self.uses, self.clear_z)
        if pending is not None:
            return {arm: pending}
        goal = self.goal(env) if callable(self.goal) else np.asarray(self.goal)
        return {arm: place(env, arm, self.name, goal, self.clear_z)}


class PourSkill(Skill):
    """Hold container `name` over `target` (a body name) and tilt it until the task registers the pour."""

    def __init__(
        self,
        name: str,
        target: str,
        height: float = 0.07,
        tilt: float = 1.75,
        arm: int | None = None,
        clear_z: float = CLEAR_Z,
    ) -> None:
        self.name, self.target, self.height, self.tilt = name, target, height, tilt
        self.arm, self.clear_z = arm, clear_z
        self.uses = (name,)

    def command(self, env, memory: dict) -> dict[int, ArmCommand]:
        arm, pending = acquire(env, self.name, self.arm, self.uses, self.clear_z)
        if pending is not None:
            return {arm: pending}
        target = self.target(env) if callable(self.target) else self.target
        tgt = env.obj_pos(target)
        top = tgt[2] + (env.objspec(target).half_height if target in env.obj_index else 0.0)
        site = site_pos(env, arm)
        goal = np.array([tgt[0], tgt[1], top + self.height + hanging_depth(env, arm)])
        if env.obj_up(self.name)[2] < 0.9:  # tilted: keep pouring here, or straighten up before moving on
            tracker = getattr(env.task, "pours", None)
            poured = tracker is not None and tracker.latched(self.name)
            if poured or np.linalg.norm(env.obj_pos(self.name)[:2] - tgt[:2]) > 0.1:
                return {arm: ArmCommand(site, DOWN, GRIPPER_CLOSED)}
            goal = np.array([tgt[0], tgt[1], max(site[2], goal[2] - 0.03)])
        over = np.linalg.norm(site[:2] - goal[:2]) < 0.03 and abs(site[2] - goal[2]) < 0.05
        rot = DOWN
        if over:
            sign = -1.0 if arm == 0 else 1.0
            rot = axis_rotation(np.array([1.0, 0.0, 0.0]), sign * self.tilt) @ DOWN
        return {arm: ArmCommand(waypoint(env, arm, goal, self.clear_z) if not over else goal, rot, GRIPPER_CLOSED)}


class ShakeSkill(Skill):
    """Hold `name` up and move it up and down until the task counts enough shakes."""

    def __init__(self, name: str, center_xy: tuple[float, float], arm: int | None = None, amplitude: float = 0.05):
        self.name, self.center_xy, self.arm, self.amplitude = name, np.asarray(center_xy), arm, amplitude
        self.uses = (name,)

    def command(self, env, memory: dict) -> dict[int, ArmCommand]:
        arm, pending = acquire(env, self.name, self.arm, self.uses, CLEAR_Z)
        if pending is not None:
            return {arm: pending}
        site = site_pos(env, arm)
        mid_z = CLEAR_Z + hanging_depth(env, arm) + 0.02
        if np.linalg.norm(site[:2] - self.center_xy) > 0.03:
            return {arm: ArmCommand(waypoint(env, arm, np.array([*self.center_xy, mid_z])), DOWN, GRIPPER_CLOSED)}
        up = memory.setdefault("shake_up", True)
        if up and site[2] > mid_z + self.amplitude - 0.01:
            memory["shake_up"] = up = False
        elif not up and site[2] < mid_z - self.amplitude + 0.01:
            memory["shake_up"] = up = True
        z = mid_z + (self.amplitude + 0.03 if up else -self.amplitude - 0.03)
        return {arm: ArmCommand(np.array([*self.center_xy, z]), DOWN, GRIPPER_CLOSED)}


class SlideSkill(Skill):
    """Grasp an articulation handle and move it along its axis to joint position `target`, then let go."""

    def __init__(self, body: str, art_index: int, axis: np.ndarray, target: float, arm: int = 1, tol: float = 0.01):
        self.body, self.art_index, self.axis = body, art_index, np.asarray(axis)
        self.target, self.arm, self.tol = target, arm, tol
        self.uses = (body,)

    def command(self, env, memory: dict) -> dict[int, ArmCommand]:
        arm = self.arm
        if _busy_with_other(env, arm, self.uses):
            return {arm: stow(env, arm)}
        q = env.articulation_qpos(self.art_index)
        done = abs(q - self.target) < self.tol
        if env.holder_of(self.body) != arm:
            if done:  # let go and back off
                return {
                    arm: ArmCommand(
                        site_pos(env, arm) - 0.02 * self.axis * np.sign(self.target - 0.5), DOWN, GRIPPER_OPEN
                    )
                }
            return {arm: pick(env, arm, self.body)}
        if done:
            return {arm: ArmCommand(site_pos(env, arm), DOWN, GRIPPER_OPEN)}
        goal = env.grasp_point(self.body, arm) + self.axis * (self.target - q)
        return {arm: ArmCommand(goal, DOWN, GRIPPER_CLOSED)}


class TurnSkill(Skill):
    """Grasp a knob from above and rotate the wrist until the knob angle reaches `target`."""

    def __init__(self, body: str, art_index: int, target: float, arm: int = 1, tol: float = 0.08):
        self.body, self.art_index, self.target, self.arm, self.tol = body, art_index, target, arm, tol
        self.uses = (body,)

    def command(self, env, memory: dict) -> dict[int, ArmCommand]:
        arm = self.arm
        if _busy_with_other(env, arm, self.uses):
            return {arm: stow(env, arm)}
        q = env.articulation_qpos(self.art_index)
        if env.holder_of(self.body) != arm:
            if q >= self.target - self.tol:
                return {arm: ArmCommand(site_pos(env, arm) + np.array([0, 0, 0.02]), DOWN, GRIPPER_OPEN)}
            return {arm: pick(env, arm, self.body)}
        if q >= self.target - self.tol:
            return {arm: ArmCommand(site_pos(env, arm), memory.get("turn_rot", DOWN), GRIPPER_OPEN)}
        rot = env.data.site_xmat[env.grasp_site[arm]].reshape(3, 3)
        yaw = float(np.arctan2(rot[1, 0], rot[0, 0]))
        target_rot = down_rotation(yaw + min(0.3, self.target - q + 0.05))
        memory["turn_rot"] = target_rot
        return {arm: ArmCommand(env.grasp_point(self.body, arm), target_rot, GRIPPER_CLOSED)}


class BimanualPlaceSkill(Skill):
    """Grasp a heavy object with both hands and carry it so its centre reaches `goal`.

    With `yaw` set, the hands also turn the object about its vertical axis (both hands orbit its
    centre) until its yaw matches `yaw` modulo `symmetry`; it is released only once aligned.
    """

    def __init__(
        self,
        name: str,
        goal,
        clear_z: float = CLEAR_Z,
        tol: float = 0.02,
        yaw: float | None = None,
        symmetry: float = np.pi,
        yaw_tol: float = 0.04,
    ) -> None:
        self.name, self.goal, self.clear_z, self.tol = name, goal, clear_z, tol
        self.yaw, self.symmetry, self.yaw_tol = yaw, symmetry, yaw_tol
        self.uses = (name,)

    def command(self, env, memory: dict) -> dict[int, ArmCommand]:
        cmds = {arm: stow(env, arm) for arm in (0, 1) if _busy_with_other(env, arm, self.uses)}
        if cmds:
            return cmds
        held = env.holder_of(self.name) >= 0
        if not held:
            gps = [env.grasp_point(self.name, a) for a in (0, 1)]
            dists = [float(np.linalg.norm(gps[a] - site_pos(env, a))) for a in (0, 1)]
            both_there = max(dists) < 0.015
            out = {}
            for a in (0, 1):
                closing = gripper_opening(env, a) < CLOSE_BELOW + 0.01 and max(dists) < 0.025
                grip = GRIPPER_CLOSED if (both_there or closing) else GRIPPER_OPEN
                out[a] = ArmCommand(waypoint(env, a, gps[a], self.clear_z), DOWN, grip)
            return out
        obj = env.obj_pos(self.name)
        goal = self.goal(env) if callable(self.goal) else np.asarray(self.goal)
        depth = obj[2] - env.objspec(self.name).half_height
        travel = max(self.clear_z + 0.02, goal[2] - env.objspec(self.name).half_height)
        dxy = float(np.linalg.norm(goal[:2] - obj[:2]))
        if dxy <= 0.02:
            wp = goal
        elif depth < travel - 0.03:
            wp = np.array([obj[0], obj[1], obj[2] + (travel - depth)])
        else:
            wp = np.array([goal[0], goal[1], obj[2]])
        delta = wp - obj
        n = np.linalg.norm(delta)
        if n > 0.012:
            delta *= 0.012 / n
        release = float(np.linalg.norm(obj - goal)) < self.tol
        if self.yaw is None:
            grip = GRIPPER_OPEN if release else GRIPPER_CLOSED
            return {a: ArmCommand(site_pos(env, a) + 2.0 * delta, DOWN, grip) for a in (0, 1)}
        err = wrap_angle(self.yaw - yaw_of(env.obj_mat(self.name)), self.symmetry)
        lifted = depth > TABLE_TOP_Z + 0.02
        turn = float(np.clip(err, -0.03, 0.03)) if lifted else 0.0
        spin = axis_rotation(np.array([0.0, 0.0, 1.0]), 2.0 * turn)
        grip = GRIPPER_OPEN if release and abs(err) < self.yaw_tol else GRIPPER_CLOSED
        out = {}
        for a in (0, 1):
            site = site_pos(env, a)
            hand = env.data.site_xmat[env.grasp_site[a]].reshape(3, 3)
            out[a] = ArmCommand(obj + spin @ (site - obj) + 2.0 * delta, down_rotation(yaw_of(hand) + 2.0 * turn), grip)
        return out


class CutSkill(Skill):
    """Chop `target` with a held blade tool until `count()` reaches `cuts`.

    `blade_local` is the blade edge's centre in the tool frame. The skill brings the edge over
    the target, pushes it down past the target's centre (the task counts the cut), then lifts it
    clear so the task re-arms the blade (`armed()`), and repeats with a small offset per cut.
    """

    def __init__(
        self,
        tool: str,
        target: str,
        blade_local: tuple[float, float, float],
        cuts: int,
        count,
        armed,
        arm: int | None = None,
        spacing: float = 0.012,
    ) -> None:
        self.tool, self.target, self.blade_local = tool, target, np.asarray(blade_local, np.float64)
        self.cuts, self.count, self.armed, self.arm, self.spacing = cuts, count, armed, arm, spacing
        self.uses = (tool,)

    def command(self, env, memory: dict) -> dict[int, ArmCommand]:
        arm, pending = acquire(env, self.tool, self.arm, self.uses, CLEAR_Z)
        if pending is not None:
            return {arm: pending}
        site = site_pos(env, arm)
        rot = env.obj_mat(self.tool)
        edge = env.obj_pos(self.tool) + rot @ self.blade_local
        fruit = env.obj_pos(self.target)
        top = fruit[2] + env.objspec(self.target).half_height
        done = self.count()
        if done >= self.cuts or not self.armed():  # lift the blade clear of the target
            goal_edge = np.array([edge[0], edge[1], top + 0.05])
            return {arm: ArmCommand(site + (goal_edge - edge), DOWN, GRIPPER_CLOSED)}
        side = rot[:, 0]  # the blade plane's normal: successive cuts step along it
        over = fruit + side * self.spacing * (done - (self.cuts - 1) / 2.0)
        dxy = float(np.linalg.norm(edge[:2] - over[:2]))
        if dxy > 0.008:  # lift / travel / hover above the target, lined up
            hover = np.array([over[0], over[1], top + 0.04])
            return {arm: ArmCommand(waypoint(env, arm, site + (hover - edge)), DOWN, GRIPPER_CLOSED)}
        goal_edge = np.array([over[0], over[1], fruit[2] - 0.012])
        return {arm: ArmCommand(site + (goal_edge - edge), DOWN, GRIPPER_CLOSED)}


class OrientedPlaceSkill(Skill):
    """Place an object at a goal position *and heading*: `select(env) -> (name, goal_centre, goal_yaw)`.

    The selection is re-evaluated every tick (e.g. "whichever shoe of the pair is not packed yet").
    Before grasping, the hand pre-turns by half the needed rotation so the wrist never has to
    turn more than ~90 degrees either way; once lifted it turns the object to `goal_yaw` (modulo
    `symmetry`) while travelling, and only releases when both position and heading match.
    """

    def __init__(
        self,
        select,
        arm=None,
        clear_z: float = CLEAR_Z,
        symmetry: float = 2 * np.pi,
        tol: float = 0.015,
        yaw_tol: float = 0.06,
    ) -> None:
        self.select, self.arm, self.clear_z = select, arm, clear_z
        self.symmetry, self.tol, self.yaw_tol = symmetry, tol, yaw_tol
        self.uses: tuple[str, ...] = ()

    def command(self, env, memory: dict) -> dict[int, ArmCommand]:
        name, goal, goal_yaw = self.select(env)
        self.uses = (name,)
        preferred = self.arm(env, name) if callable(self.arm) else self.arm
        arm, pending = acquire(env, name, preferred, self.uses, self.clear_z)
        err = wrap_angle(goal_yaw - yaw_of(env.obj_mat(name)), self.symmetry)
        if pending is not None:
            if not _busy_with_other(env, arm, self.uses):  # a pick: pre-turn the hand by -err/2
                pending.rot = down_rotation(np.pi - err / 2)
            return {arm: pending}
        hand_yaw = yaw_of(env.data.site_xmat[env.grasp_site[arm]].reshape(3, 3))
        lifted = env.obj_pos(name)[2] - env.objspec(name).half_height > TABLE_TOP_Z + 0.015
        turn = float(np.clip(err, -0.2, 0.2)) if lifted else 0.0
        cmd = place(env, arm, name, goal, self.clear_z, self.tol, down_rotation(hand_yaw + turn))
        if abs(err) > self.yaw_tol:
            cmd.gripper = GRIPPER_CLOSED
        return {arm: cmd}
