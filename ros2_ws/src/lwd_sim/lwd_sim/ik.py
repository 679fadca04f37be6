"""Damped-least-squares IK on the arm Jacobian (mj_jacSite), one step per control tick.

Experts call this every tick from the *measured* state, so they work from any state (e.g.
when a human takes over a running policy) without a stored trajectory. The end-effector
step is speed-limited in position and rotation; a null-space term pulls toward the home
posture so the redundant 7th DoF stays away from joint limits.
"""

from __future__ import annotations

import mujoco
import numpy as np

from lwd_sim.robot import ARM_LIMITS, HOME_ARM


def down_rotation(yaw: float = np.pi) -> np.ndarray:
    """Hand frame with the approach axis (hand z) pointing at the floor, rotated by `yaw`."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


def axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    quat = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quat, np.asarray(axis, np.float64), angle)
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, quat)
    return mat.reshape(3, 3)


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Rotation vector taking `current` to `target` (world frame)."""
    r = target @ current.T
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, r.ravel())
    vel = np.zeros(3)
    mujoco.mju_quat2Vel(vel, quat, 1.0)
    return vel


class ArmIK:
    """DLS IK for one arm of an LwdSimEnv (arm 0 = left, 1 = right)."""

    def __init__(self, env, arm: int, damping: float = 0.04, null_gain: float = 0.05) -> None:
        self.env = env
        self.arm = arm
        self.site = env.grasp_site[arm]
        self.dofs = env._qvel_adr[arm * 8 : arm * 8 + 7]
        self.qadr = env._qpos_adr[arm * 8 : arm * 8 + 7]
        self.damping = damping
        self.null_gain = null_gain
        nv = env.model.nv
        self._jacp = np.zeros((3, nv))
        self._jacr = np.zeros((3, nv))

    def site_pose(self) -> tuple[np.ndarray, np.ndarray]:
        d = self.env.data
        return d.site_xpos[self.site].copy(), d.site_xmat[self.site].reshape(3, 3).copy()

    def solve(
        self, target_pos: np.ndarray, target_rot: np.ndarray, max_lin: float = 0.015, max_rot: float = 0.08
    ) -> np.ndarray:
        """Joint targets (7,) moving the grasp site one speed-limited step toward the target pose."""
        m, d = self.env.model, self.env.data
        pos, rot = self.site_pose()
        e_pos = target_pos - pos
        n = np.linalg.norm(e_pos)
        if n > max_lin:
            e_pos *= max_lin / n
        e_rot = rotation_error(target_rot, rot)
        n = np.linalg.norm(e_rot)
        if n > max_rot:
            e_rot *= max_rot / n
        mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.site)
        J = np.vstack([self._jacp[:, self.dofs], self._jacr[:, self.dofs]])
        err = np.concatenate([e_pos, 0.5 * e_rot])
        Jw = J.copy()
        Jw[3:] *= 0.5
        JJt = Jw @ Jw.T + (self.damping**2) * np.eye(6)
        q = d.qpos[self.qadr]
        dq = Jw.T @ np.linalg.solve(JJt, err)
        # Null-space posture term: pull toward home without disturbing the task.
        pinv = Jw.T @ np.linalg.solve(JJt, np.eye(6))
        dq += (np.eye(7) - pinv @ Jw) @ (self.null_gain * (HOME_ARM - q))
        return np.clip(q + 1.6 * dq, ARM_LIMITS[:, 0], ARM_LIMITS[:, 1])
