"""Grasp abstraction: a weld equality switched on when a closing gripper pinches a grasp point.

Contact-based grasping of primitives is fragile and slow to simulate; the paper's experts are
humans who never fumble, so the sim grasps robustly instead: when an arm's gripper closes
(its opening crosses CLOSE_BELOW on this tick) with the grasp site within REACH of a
graspable's grasp point, the (arm, body) weld is activated at the current relative pose; it
is released as soon as the opening exceeds OPEN_ABOVE. Heavy objects (a carton) need both
arms: the welds engage only when both grippers have closed on their two grasp points, and a
release by either arm drops it. Fingers never collide, so closing on nothing simply closes.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

CLOSE_BELOW = 0.012
OPEN_ABOVE = 0.02
REACH = 0.03


@dataclass
class Graspable:
    body_id: int
    grasp_local: tuple[np.ndarray, np.ndarray]  # grasp point for (left, right) arm, body frame
    heavy: bool
    weld_ids: tuple[int, int]  # equality id per arm


def _relpose(model: mujoco.MjModel, data: mujoco.MjData, b1: int, b2: int) -> np.ndarray:
    """Pose of body2 in body1's frame as MuJoCo's weld `relpose` (pos, quat)."""
    p1, p2 = data.xpos[b1], data.xpos[b2]
    q1, q2 = data.xquat[b1], data.xquat[b2]
    q1inv = np.zeros(4)
    mujoco.mju_negQuat(q1inv, q1)
    rel_p = np.zeros(3)
    mujoco.mju_rotVecQuat(rel_p, p2 - p1, q1inv)
    rel_q = np.zeros(4)
    mujoco.mju_mulQuat(rel_q, q1inv, q2)
    return np.concatenate([rel_p, rel_q])


class GraspManager:
    """Tracks which graspable each arm holds and toggles the welds (see module docstring)."""

    def __init__(
        self,
        model: mujoco.MjModel,
        hand_body: tuple[int, int],
        grasp_site: tuple[int, int],
        gripper_qpos: tuple[int, int],
        graspables: list[Graspable],
    ) -> None:
        self.model = model
        self.hand_body = hand_body
        self.grasp_site = grasp_site
        self.gripper_qpos = gripper_qpos
        self.graspables = graspables
        self.held = [-1, -1]
        self.pinched = [-1, -1]  # heavy graspable an arm has closed on, waiting for the other arm
        self._prev_open = [1.0, 1.0]

    def reset(self, data: mujoco.MjData) -> None:
        for g in self.graspables:
            for w in g.weld_ids:
                data.eq_active[w] = 0
        self.held = [-1, -1]
        self.pinched = [-1, -1]
        self._prev_open = [float(data.qpos[a]) for a in self.gripper_qpos]

    def grasp_point_world(self, data: mujoco.MjData, index: int, arm: int) -> np.ndarray:
        g = self.graspables[index]
        return data.xpos[g.body_id] + data.xmat[g.body_id].reshape(3, 3) @ g.grasp_local[arm]

    def _nearest(self, data: mujoco.MjData, arm: int) -> int:
        site = data.site_xpos[self.grasp_site[arm]]
        best, best_d = -1, REACH
        for i in range(len(self.graspables)):
            d = float(np.linalg.norm(self.grasp_point_world(data, i, arm) - site))
            if d < best_d:
                best, best_d = i, d
        return best

    def _attach(self, data: mujoco.MjData, arm: int, index: int) -> None:
        g = self.graspables[index]
        w = g.weld_ids[arm]
        self.model.eq_data[w, 3:10] = _relpose(self.model, data, self.hand_body[arm], g.body_id)
        data.eq_active[w] = 1
        self.held[arm] = index

    def _detach(self, data: mujoco.MjData, arm: int) -> None:
        index = self.held[arm]
        if index >= 0:
            data.eq_active[self.graspables[index].weld_ids[arm]] = 0
        self.held[arm] = -1

    def update(self, data: mujoco.MjData) -> None:
        """Call once per control tick after physics: detect closing/opening edges."""
        for arm in (0, 1):
            opening = float(data.qpos[self.gripper_qpos[arm]])
            closed_now = self._prev_open[arm] > CLOSE_BELOW >= opening
            self._prev_open[arm] = opening
            if opening > OPEN_ABOVE:
                self.pinched[arm] = -1
                if self.held[arm] >= 0:
                    index = self.held[arm]
                    self._detach(data, arm)
                    if self.graspables[index].heavy:  # too heavy for one hand: the other lets go too
                        other = 1 - arm
                        if self.held[other] == index:
                            self._detach(data, other)
                continue
            if closed_now and self.held[arm] < 0:
                index = self._nearest(data, arm)
                if index < 0 or index in self.held:
                    continue
                if self.graspables[index].heavy:
                    self.pinched[arm] = index
                    if self.pinched[1 - arm] == index:
                        self._attach(data, arm, index)
                        self._attach(data, 1 - arm, index)
                else:
                    self._attach(data, arm, index)
