"""Scripted-expert rollouts shared by the sim tests (a plain module next to them, imported by name).

Long-horizon episodes cost ~1 s each; several test files check different properties of the same
clean episode, so `RolloutCache` memoises the noise-free ones for the whole session.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rollout:
    """One expert episode: the final info (+ 'length') and per-step subtask index and reward."""

    info: dict
    indices: tuple[int, ...]  # subtask index at reset, then after every step
    rewards: tuple[float, ...]  # reward of every step


def expert_rollout(task: str, seed: int, config=None, max_steps: int | None = None) -> Rollout:
    """Roll a ScriptedExpert (optionally imperfect) from reset(seed) to termination or the time limit."""
    from lwd_sim import ScriptedExpert, make_env

    env = make_env(task, seed=seed, max_steps=max_steps)
    expert = ScriptedExpert(env, config)
    env.reset(seed)
    indices, rewards = [env.status.subtask_index], []
    info = env.info()
    for _ in range(max_steps or env.task.max_steps):
        _, reward, terminated, truncated, info = env.step(expert.act())
        indices.append(info["subtask_index"])
        rewards.append(reward)
        if terminated or truncated:
            break
    return Rollout(dict(info, length=env.steps), tuple(indices), tuple(rewards))


class RolloutCache:
    """Noise-free expert rollouts memoised per (task, seed) for the whole test session."""

    def __init__(self) -> None:
        self._clean: dict[tuple[str, int], Rollout] = {}

    def clean(self, task: str, seed: int) -> Rollout:
        key = (task, seed)
        if key not in self._clean:
            self._clean[key] = expert_rollout(task, seed)
        return self._clean[key]
