"""Policy evaluation in the sim fleet, scored the way the paper's Table I scores the real one.

Grocery tasks report binary success rate; long-horizon tasks report the average step-wise
score (fraction of subtasks completed, 1 for a success). The "average" column is the mean of
the per-task numbers over the evaluated tasks, and the group averages are the same mean over
each group's tasks. Cycle time (paper Fig. 5) is the mean duration, in seconds at the control
rate, of the successful episodes.

Evaluation never uses takeovers, and its env seeds and flow noise come from
:class:`EvalConfig` alone, so two policies evaluated with the same config face the same scenes
and the same noise draws (a paired comparison: the seed-to-seed spread then reflects training,
not evaluation luck).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from lwd_learner.dataset import EpisodeArrays, Normalizer
from lwd_learner.rollout import EpisodeSpec, PolicyFn, RolloutConfig, RolloutResult, SimFleet
from lwd_protocol.robot_spec import CONTROL_RATE_HZ
from lwd_protocol.tasks import TaskGroup, task_info

EVAL_SEED_BASE = 1_000_000  # far from the generator's and the online stage's env seeds


@dataclass(frozen=True)
class EvalConfig:
    """Which episodes an evaluation runs; tasks None = every task of the fleet."""

    episodes_per_task: int = 10
    seed: int = EVAL_SEED_BASE
    tasks: tuple[str, ...] | None = None
    keep_episodes: bool = False  # return the EpisodeArrays (for value plots)
    # The sampler every evaluated policy runs with: chunk ticks executed before replanning (None = the
    # whole chunk, as the robots' executor roughly does) and the flow's noise scale (1 = N(0, I)).
    execute_steps: int | None = None
    noise_scale: float = 1.0


@dataclass
class TaskEval:
    """One task's evaluation."""

    task: str
    group: str
    metric: str  # "success" (grocery) or "score" (long-horizon)
    value: float  # the Table I number
    success_rate: float
    mean_score: float
    episodes: int
    mean_length_s: float
    cycle_time_s: float  # mean duration of successful episodes; NaN if none succeeded
    scores: list[float] = field(default_factory=list)


@dataclass
class EvalResult:
    """Per-task results and the Table I averages."""

    per_task: dict[str, TaskEval]
    episodes: list[EpisodeArrays] = field(default_factory=list)
    seconds: float = 0.0

    def group_average(self, group: TaskGroup | None = None) -> float:
        values = [t.value for t in self.per_task.values() if group is None or t.group == group.value]
        return float(np.mean(values)) if values else float("nan")

    @property
    def average(self) -> float:
        return self.group_average(None)

    def to_dict(self) -> dict:
        return {
            "per_task": {k: asdict(v) for k, v in self.per_task.items()},
            "grocery": self.group_average(TaskGroup.GROCERY),
            "long_horizon": self.group_average(TaskGroup.LONG_HORIZON),
            "average": self.average,
            "seconds": round(self.seconds, 3),
        }


def eval_specs(tasks: Sequence[str], config: EvalConfig) -> list[EpisodeSpec]:
    """The fixed evaluation episodes: ``episodes_per_task`` seeds per task, disjoint across tasks."""
    return [
        EpisodeSpec(task, config.seed + 10_000 * i + j)
        for i, task in enumerate(tasks)
        for j in range(config.episodes_per_task)
    ]


def summarize(results: Sequence[RolloutResult], tasks: Sequence[str]) -> dict[str, TaskEval]:
    """Table I numbers per task from finished episodes."""
    out = {}
    for task in tasks:
        mine = [r for r in results if r.spec.task == task]
        if not mine:
            raise ValueError(f"no evaluation episodes for task {task!r}")
        info = task_info(task)
        success = np.array([r.success for r in mine], float)
        scores = np.array([r.score for r in mine], float)
        lengths = np.array([r.length for r in mine], float) / CONTROL_RATE_HZ
        out[task] = TaskEval(
            task=task,
            group=info.group.value,
            metric="score" if info.is_long_horizon else "success",
            value=float(scores.mean() if info.is_long_horizon else success.mean()),
            success_rate=float(success.mean()),
            mean_score=float(scores.mean()),
            episodes=len(mine),
            mean_length_s=float(lengths.mean()),
            cycle_time_s=float(lengths[success > 0].mean()) if success.any() else float("nan"),
            scores=[float(s) for s in scores],
        )
    return out


def evaluate(
    fleet: SimFleet,
    policy: PolicyFn,
    normalizer: Normalizer,
    config: EvalConfig = EvalConfig(),
    horizon: int = 30,
) -> EvalResult:
    """Run the evaluation episodes without takeovers and score them per task."""
    if config.episodes_per_task < 1:
        raise ValueError(f"episodes_per_task must be >= 1, got {config.episodes_per_task}")
    tasks = config.tasks or fleet.tasks
    specs = eval_specs(tasks, config)
    rng = np.random.default_rng(config.seed)
    rollout = RolloutConfig(takeover=None, execute_steps=config.execute_steps, noise_scale=config.noise_scale)
    results, stats = fleet.run(policy, normalizer, specs, rng, rollout, horizon=horizon)
    return EvalResult(
        per_task=summarize(results, tasks),
        episodes=[r.episode for r in results] if config.keep_episodes else [],
        seconds=stats.seconds,
    )
