"""Scripted experts: the task's skill plan + DLS IK -> 30 Hz 16-D joint targets.

`ScriptedExpert(env).act()` reads the env's current state (privileged, SIM-ONLY) and returns
one action; it keeps no trajectory, so it can take over a running policy at any tick (the
"human" of interventions). Imperfect experts for rollout/play data add temporally correlated
joint noise and inject one mistake:
  wrong_object  act on a distractor (wrong item / wrong ingredient) -> failure
  skip          skip one subtask and do the next one instead       -> failure or stall
  drop          open the gripper mid-transport once                 -> often recoverable
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lwd_sim.ik import ArmIK
from lwd_sim.robot import GRIPPER_OPEN, HOME_ARM
from lwd_sim.skills import CLEAR_Z, ArmCommand, site_pos, stow

MISTAKES = ("wrong_object", "skip", "drop")


@dataclass
class ExpertConfig:
    action_noise: float = 0.0  # std [rad] of the correlated noise added to arm joint targets
    noise_correlation: float = 0.8  # AR(1) coefficient of that noise
    mistake: str | None = None  # one of MISTAKES, or None
    mistake_subtask: int | None = None  # subtask at which to err (None: drawn at random)
    seed: int = 0


class ScriptedExpert:
    """Reactive expert for any task of the suite (see module docstring)."""

    def __init__(self, env, config: ExpertConfig | None = None) -> None:
        self.env = env
        self.config = config or ExpertConfig()
        self.iks = (ArmIK(env, 0), ArmIK(env, 1))
        self.rng = np.random.default_rng(self.config.seed)
        self._episode = None
        self.memory: dict = {}

    def _refresh(self) -> None:
        env = self.env
        key = (env.episode_count, env.instruction)
        if key == self._episode:
            return
        self._episode = key
        self.memory = {}
        self._noise = np.zeros(14)
        self.plan = env.task.plan(env)
        cfg = self.config
        self.mistake_at = -1
        if cfg.mistake is not None:
            if cfg.mistake not in MISTAKES:
                raise ValueError(f"unknown mistake {cfg.mistake!r}; choose from {MISTAKES}")
            candidates = env.task.mistake_subtasks(cfg.mistake)
            if candidates:
                k = cfg.mistake_subtask if cfg.mistake_subtask in candidates else int(self.rng.choice(candidates))
                self.mistake_at = k
                if cfg.mistake == "wrong_object":
                    self.plan = env.task.wrong_object_plan(env, k, self.rng)

    def active_skill(self):
        idx = self.env.status.subtask_index
        if idx >= len(self.plan):
            return None
        if self.config.mistake == "skip" and idx == self.mistake_at and idx + 1 < len(self.plan):
            return self.plan[idx + 1]
        return self.plan[idx]

    def act(self, env=None) -> np.ndarray:
        """One 16-D joint-position target for the env's current state."""
        if env is not None and env is not self.env:
            raise ValueError("expert is bound to another env")
        self._refresh()
        env = self.env
        skill = self.active_skill()
        cmds = skill.command(env, self.memory) if skill is not None else {}
        wanted = skill.uses if skill is not None else ()
        for arm in (0, 1):
            if arm not in cmds:
                held = env.held_name(arm)
                cmds[arm] = stow(env, arm) if held is not None and held not in wanted else ArmCommand(None)
        if self.config.mistake == "drop" and env.status.subtask_index == self.mistake_at:
            self._maybe_drop(skill, cmds)
        q = env.joint_position()
        action = np.zeros(16)
        for arm in (0, 1):
            c = cmds[arm]
            sl = slice(arm * 8, arm * 8 + 7)
            if c.pos is None:
                action[sl] = q[sl] + np.clip(HOME_ARM - q[sl], -0.05, 0.05)
            else:
                action[sl] = self.iks[arm].solve(c.pos, c.rot)
            action[arm * 8 + 7] = c.gripper
        if self.config.action_noise > 0:
            a = self.config.noise_correlation
            self._noise = a * self._noise + np.sqrt(1 - a * a) * self.rng.normal(0, self.config.action_noise, 14)
            action[0:7] += self._noise[:7]
            action[8:15] += self._noise[7:]
        return np.clip(action, env.limits[:, 0], env.limits[:, 1])

    def _maybe_drop(self, skill, cmds: dict[int, ArmCommand]) -> None:
        """Open the carrying gripper for a few ticks once the object is lifted to travel height."""
        env = self.env
        name = skill.carry_object() if skill is not None else None
        arm = env.holder_of(name) if name else -1
        ticks = self.memory.get("drop_ticks", 0)
        if 0 < ticks < 10:
            self.memory["drop_ticks"] = ticks + 1
            for a in (0, 1):
                if cmds[a].pos is not None:
                    cmds[a].gripper = GRIPPER_OPEN
            return
        if ticks == 0 and arm >= 0 and site_pos(env, arm)[2] > CLEAR_Z + 0.05:
            self.memory["drop_ticks"] = 1
            cmds[arm].gripper = GRIPPER_OPEN


def run_expert_episode(env, expert: ScriptedExpert, seed: int, max_steps: int | None = None, callback=None) -> dict:
    """Reset with `seed` and roll the expert to termination; return the final info (+ 'length')."""
    obs = env.reset(seed)
    info = env.info()
    limit = max_steps or env.config.max_steps or env.task.max_steps
    for _ in range(limit):
        action = expert.act()
        if callback is not None:
            callback(obs, action, env)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    info = dict(info)
    info["length"] = env.steps
    return info
