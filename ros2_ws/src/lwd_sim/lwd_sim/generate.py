"""Offline-buffer generator: scripted-expert episodes as MCAP files via lwd_protocol's EpisodeWriter.

The mix per task follows the paper's Table IV ratios (hours, scaled to episode counts):
  demo     noise-free expert, kept only if successful (EpisodeSource.DEMO, action source HUMAN);
           a fraction of them (per task group, `disturbed_demo_fraction`) runs under a small DART
           disturbance of the plant (`demo_disturbance`): the recorded action is the expert's
           command, the states show it correcting the deviations
  rollout  "historical policy": noisy expert, a mistake with the task's rollout failure rate
           (EpisodeSource.ROLLOUT, action source POLICY); outcome as the sim judges it
  play     failure-mode exploration: noisy expert with a forced mistake, always labelled
           unsuccessful (EpisodeSource.PLAY, action source HUMAN)
Sim state (SIM-ONLY) is written every step with the subtask index; images only with --images.

    python -m lwd_sim.generate --out DIR --episodes-per-task 10 [--tasks restocking gongfu_tea] [--images]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lwd_protocol.episode import (
    ActionSource,
    EpisodeEnd,
    EpisodeSource,
    EpisodeStart,
    Outcome,
    episode_filename,
    new_episode_id,
)
from lwd_protocol.episode_io import EpisodeWriter
from lwd_protocol.robot_spec import CONTROL_RATE_HZ
from lwd_protocol.tasks import TASK_NAMES, TaskGroup, task_info
from lwd_sim.env import EnvConfig, LwdSimEnv
from lwd_sim.experts import MISTAKES, ExpertConfig, ScriptedExpert
from lwd_sim.tasks import IMPLEMENTED_TASKS

# Table IV (hours): demo, rollout success, rollout failure, play.
TABLE_IV: dict[str, tuple[float, float, float, float]] = {
    "restocking": (14.5, 10.7, 1.7, 7.5),
    "misplaced_correction": (12.7, 10.8, 1.7, 9.7),
    "freezer": (10.8, 7.7, 4.6, 3.3),
    "open_cooler": (11.1, 13.7, 1.3, 0.8),
    "gongfu_tea": (102.3, 12.4, 4.4, 43.6),
    "fruit_juice": (100.5, 17.4, 14.7, 47.1),
    "cocktail": (47.3, 4.4, 7.4, 28.0),
    "shoebox": (37.3, 11.7, 3.3, 48.0),
}


@dataclass
class GenConfig:
    out: Path
    episodes_per_task: int = 10
    tasks: tuple[str, ...] = IMPLEMENTED_TASKS
    images: bool = False
    image_size: int = 128
    seed: int = 0
    robot_id: str = "sim-generator"
    rollout_noise: float = 0.01
    play_noise: float = 0.015
    max_demo_attempts: int = 3
    demos_only: bool = False  # every episode a demo (behaviour-cloning probes), not the Table IV mix
    shards_per_task: int = 1  # split each task's episodes into this many independently seeded jobs
    # DART demos: [rad] stationary std of the AR(0.9) arm-target disturbance (EnvConfig.disturbance)
    # and the fraction of each task group's demos run under it. Measured by behaviour cloning on 200
    # demos (lwd_sim README, session 8): gongfu_tea 0.23 clean, 0.59 all disturbed, 0.71 half;
    # restocking 0.88 clean but 0.50 with any disturbed demos (the picks get less precise).
    demo_disturbance: float = 0.01
    disturbed_demo_fraction: dict[str, float] = field(
        default_factory=lambda: {TaskGroup.GROCERY.value: 0.0, TaskGroup.LONG_HORIZON.value: 0.5}
    )


COUNT_KEYS = ("demo", "demo_disturbed", "rollout_success", "rollout_failure", "play", "demo_discarded")


@dataclass
class GenStats:
    episodes: int = 0
    steps: int = 0
    seconds: float = 0.0
    per_task: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "episodes": self.episodes,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "episodes_per_s": round(self.episodes / max(self.seconds, 1e-9), 3),
            "steps_per_s": round(self.steps / max(self.seconds, 1e-9), 1),
            "per_task": self.per_task,
        }


def composition(task: str, n: int) -> tuple[int, int, int, float]:
    """Split n episodes into (demo, rollout, play) counts and the rollout failure rate."""
    demo, rs, rf, play = TABLE_IV[task]
    total = demo + rs + rf + play
    n_roll = round(n * (rs + rf) / total)
    n_play = round(n * play / total)
    if n >= 3:
        n_roll, n_play = max(1, n_roll), max(1, n_play)
    n_demo = max(0, n - n_roll - n_play)
    return n_demo, n_roll, n_play, rf / (rs + rf)


def _spread_evenly(i: int, fraction: float) -> bool:
    """Whether item i is among a `fraction` of items picked evenly through the sequence."""
    return math.floor((i + 1) * fraction) > math.floor(i * fraction)


def record_episode(
    env: LwdSimEnv,
    expert: ScriptedExpert,
    seed: int,
    out: Path,
    source: EpisodeSource,
    robot_id: str,
    images: bool,
    keep=None,
) -> tuple[Path | None, dict]:
    """Roll `expert` from reset(seed) to termination and write it; `keep(info)` False discards it."""
    obs = env.reset(seed)
    start_ns = time.time_ns()
    start = EpisodeStart(
        episode_id=new_episode_id(robot_id, start_ns),
        robot_id=robot_id,
        task=env.task.name,
        instruction=env.instruction,
        source=source,
        policy_version=0,
        started_at_ns=start_ns,
        seed=seed,
    )
    path = out / episode_filename(start.episode_id)
    writer = EpisodeWriter(path, start)
    action_source = ActionSource.POLICY if source is EpisodeSource.ROLLOUT else ActionSource.HUMAN
    dt_ns = int(1e9 / CONTROL_RATE_HZ)
    limit = env.config.max_steps or env.task.max_steps
    info = env.info()
    try:
        for t in range(limit):
            stamp = start_ns + t * dt_ns
            action = expert.act()
            writer.write_joint_state(obs["joint_position"], t, stamp)
            if images:
                for cam, img in env.render().items():
                    writer.write_image(cam, img, t, stamp)
            st = env.status
            writer.write_sim_state(
                obs["sim_state"], t, stamp, st.subtask_index, env.task.num_subtasks, st.success, st.failed
            )
            writer.write_action(action, t, stamp, action_source, 0)
            obs, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
    except BaseException:
        writer.abandon()
        path.with_name(path.name + ".partial").unlink(missing_ok=True)
        raise
    info = dict(info, length=env.steps)
    if keep is not None and not keep(info):
        writer.abandon()
        path.with_name(path.name + ".partial").unlink(missing_ok=True)
        return None, info
    if source is EpisodeSource.PLAY:
        outcome = Outcome.FAILURE  # play data is labelled unsuccessful whatever happened
    elif info["success"]:
        outcome = Outcome.SUCCESS
    elif info["failed"]:
        outcome = Outcome.FAILURE
    else:
        outcome = Outcome.TIMEOUT
    note = info["failure_reason"]
    if source is EpisodeSource.PLAY and info["success"]:
        note = "sim success, labelled unsuccessful (play)"
    end = EpisodeEnd(
        outcome=outcome,
        num_steps=env.steps,
        subtasks_done=info["subtask_index"],
        num_subtasks=env.task.num_subtasks,
        ended_at_ns=start_ns + env.steps * dt_ns,
        policy_versions=(0,),
        note=f"{note}; mistake={expert.config.mistake}",
    )
    return writer.close(end), info


def _shard_size(n: int, shards: int, shard: int) -> int:
    """Episodes of shard `shard` when n are split as evenly as possible over `shards`."""
    return n // shards + int(shard < n % shards)


def _generate_shard(cfg: GenConfig, task: str, shard: int) -> tuple[str, dict[str, int], int]:
    """Write one task's share of episodes (its own seed stream) and return (task, counts, steps)."""
    rng = np.random.default_rng([cfg.seed, TASK_NAMES.index(task), shard])
    robot_id = cfg.robot_id if cfg.shards_per_task == 1 else f"{cfg.robot_id}-{shard}"
    n = _shard_size(cfg.episodes_per_task, cfg.shards_per_task, shard)
    if cfg.demos_only:
        n_demo, n_roll, n_play, fail_rate = n, 0, 0, 0.0
    else:
        n_demo, n_roll, n_play, fail_rate = composition(task, n)
    fraction = cfg.disturbed_demo_fraction.get(task_info(task).group.value, 0.0)
    env = LwdSimEnv(task, 0, EnvConfig(render=False, image_size=cfg.image_size))
    disturbed_env = None  # built only when this task has disturbed demos
    if fraction > 0 and n_demo > 0:
        disturbed = EnvConfig(render=False, image_size=cfg.image_size, disturbance=cfg.demo_disturbance)
        disturbed_env = LwdSimEnv(task, 0, disturbed)
    counts = dict.fromkeys(COUNT_KEYS, 0)
    steps = 0
    seed = int(rng.integers(1 << 30))
    try:
        for i in range(n_demo):
            disturbed = disturbed_env is not None and _spread_evenly(i, fraction)
            demo_env = disturbed_env if disturbed else env
            for _attempt in range(cfg.max_demo_attempts):
                seed += 1
                expert = ScriptedExpert(demo_env, ExpertConfig(seed=seed))
                path, info = record_episode(
                    demo_env,
                    expert,
                    seed,
                    cfg.out,
                    EpisodeSource.DEMO,
                    robot_id,
                    cfg.images,
                    keep=lambda i: i["success"],
                )
                steps += info["length"]
                if path is not None:
                    counts["demo"] += 1
                    counts["demo_disturbed"] += int(disturbed)
                    break
                counts["demo_discarded"] += 1
        for kind, k in (("rollout", n_roll), ("play", n_play)):
            for _ in range(k):
                seed += 1
                applicable = [m for m in MISTAKES if env.task.mistake_subtasks(m)]
                if kind == "play" or rng.random() < fail_rate:
                    mistake = str(rng.choice(applicable))
                else:
                    mistake = None
                noise = cfg.play_noise if kind == "play" else cfg.rollout_noise
                expert = ScriptedExpert(env, ExpertConfig(action_noise=noise, mistake=mistake, seed=seed))
                source = EpisodeSource.PLAY if kind == "play" else EpisodeSource.ROLLOUT
                _, info = record_episode(env, expert, seed, cfg.out, source, robot_id, cfg.images)
                steps += info["length"]
                key = "play" if kind == "play" else ("rollout_success" if info["success"] else "rollout_failure")
                counts[key] += 1
    finally:
        env.close()
        if disturbed_env is not None:
            disturbed_env.close()
    return task, counts, steps


def generate(cfg: GenConfig, workers: int = 1) -> GenStats:
    """Write the buffer: one job per (task, shard), in `workers` processes (spawned, so a caller that
    already runs JAX threads is safe). Each job has its own seed stream, so the episodes do not
    depend on `workers`."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    if cfg.shards_per_task < 1:
        raise ValueError(f"shards_per_task must be >= 1, got {cfg.shards_per_task}")
    t0 = time.perf_counter()
    jobs = [(cfg, task, shard) for task in cfg.tasks for shard in range(cfg.shards_per_task)]
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            results = pool.starmap(_generate_shard, jobs)
    else:
        results = [_generate_shard(*job) for job in jobs]
    stats = GenStats()
    for task, counts, steps in results:
        merged = stats.per_task.setdefault(task, dict.fromkeys(COUNT_KEYS, 0))
        for key, value in counts.items():
            merged[key] += value
        stats.steps += steps
        stats.episodes += sum(counts[k] for k in ("demo", "rollout_success", "rollout_failure", "play"))
    stats.seconds = time.perf_counter() - t0
    return stats


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--episodes-per-task", type=int, default=10)
    p.add_argument("--tasks", nargs="+", default=list(IMPLEMENTED_TASKS), choices=TASK_NAMES)
    p.add_argument("--images", action="store_true", help="also record the three camera streams")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="processes (one job per task: the tasks run in parallel)")
    p.add_argument("--robot-id", default="sim-generator")
    p.add_argument(
        "--demo-disturbance", type=float, default=GenConfig.demo_disturbance, help="DART disturbance std [rad] of demos"
    )
    a = p.parse_args(argv)
    cfg = GenConfig(
        out=a.out,
        episodes_per_task=a.episodes_per_task,
        tasks=tuple(a.tasks),
        images=a.images,
        image_size=a.image_size,
        seed=a.seed,
        robot_id=a.robot_id,
        demo_disturbance=a.demo_disturbance,
    )
    print(json.dumps(generate(cfg, workers=a.workers).as_dict(), indent=2))


if __name__ == "__main__":
    main()
