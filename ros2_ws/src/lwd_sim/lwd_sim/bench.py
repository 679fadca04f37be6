"""Speed benchmark: state-only control steps/s, 3-camera observations/s, scripted-expert success rates
per task (noise-free, seeds 1000..), offline generation throughput.

    python -m lwd_sim.bench [--out ros2_ws/src/lwd_sim/bench/results.json] [--quick] [--expert-seeds 20]

Single process (= one core). Numbers are measured, never hard-coded; rerun on the target box.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

from lwd_sim.env import EnvConfig, LwdSimEnv
from lwd_sim.experts import ExpertConfig, ScriptedExpert, run_expert_episode
from lwd_sim.generate import GenConfig, generate
from lwd_sim.robot import home_action
from lwd_sim.tasks import IMPLEMENTED_TASKS


def bench_state_steps(task: str, steps: int) -> dict:
    env = LwdSimEnv(task, 0)
    base = home_action()
    t0 = time.perf_counter()
    for t in range(steps):
        a = base.copy()
        a[[0, 8]] += 0.3 * np.sin(t / 15.0)
        _, _, term, trunc, _ = env.step(a)
        if term or trunc:
            env.reset(t)
    raw = steps / (time.perf_counter() - t0)
    env.reset(0)
    expert = ScriptedExpert(env)
    t0 = time.perf_counter()
    for t in range(steps):
        _, _, term, trunc, _ = env.step(expert.act())
        if term or trunc:
            env.reset(t)
    with_expert = steps / (time.perf_counter() - t0)
    return {"task": task, "env_steps_per_s": round(raw, 1), "env_plus_expert_steps_per_s": round(with_expert, 1)}


def bench_expert_success(task: str, seeds: int) -> dict:
    """Noise-free scripted expert over `seeds` seeds: success rate, step-wise score, episode length, speed."""
    env = LwdSimEnv(task, 0)
    infos = []
    t0 = time.perf_counter()
    for seed in range(1000, 1000 + seeds):
        infos.append(run_expert_episode(env, ScriptedExpert(env, ExpertConfig(seed=seed)), seed))
    seconds = time.perf_counter() - t0
    steps = sum(i["length"] for i in infos)
    lengths = [i["length"] for i in infos]
    return {
        "task": task,
        "episodes": seeds,
        "success_rate": round(float(np.mean([i["success"] for i in infos])), 3),
        "mean_score": round(float(np.mean([i["score"] for i in infos])), 3),
        "mean_length": round(float(np.mean(lengths)), 1),
        "min_max_length": [int(min(lengths)), int(max(lengths))],
        "time_limit": env.task.max_steps,
        "failures": sorted({i["failure_reason"] or "timeout" for i in infos if not i["success"]}),
        "env_plus_expert_steps_per_s": round(steps / seconds, 1),
    }


def bench_render(size: int, frames: int, task: str = "restocking") -> dict:
    env = LwdSimEnv(task, 0, EnvConfig(render=False, image_size=size))
    env.render()  # create the GL context outside the timing
    t0 = time.perf_counter()
    for _ in range(frames):
        env.step(env.last_action)
        env.render()
    rate = frames / (time.perf_counter() - t0)
    env.close()
    return {
        "task": task,
        "image_size": size,
        "three_camera_obs_per_s": round(rate, 1),
        "frames_per_s": round(3 * rate, 1),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "bench" / "results.json")
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    p.add_argument("--expert-seeds", type=int, default=20, help="episodes per task for the expert success rates")
    a = p.parse_args(argv)
    n = 300 if a.quick else 1500
    result = {
        "host": {
            "machine": platform.machine(),
            "python": platform.python_version(),
            "mujoco": mujoco.__version__,
            "mujoco_gl": os.environ.get("MUJOCO_GL"),
            "cpu_count": os.cpu_count(),
            "processes": 1,
            "loadavg_1m_at_start": round(os.getloadavg()[0], 2),  # other jobs on a shared box deflate every rate
        },
        "state_only": [bench_state_steps(t, n) for t in IMPLEMENTED_TASKS],
        "render": [bench_render(s, 30 if a.quick else 150) for s in (128, 224)],
        "render_128_per_task": [bench_render(128, 30 if a.quick else 60, t) for t in IMPLEMENTED_TASKS],
        "expert_success": [bench_expert_success(t, 3 if a.quick else a.expert_seeds) for t in IMPLEMENTED_TASKS],
    }
    with tempfile.TemporaryDirectory() as tmp:
        stats = generate(GenConfig(out=Path(tmp), episodes_per_task=2 if a.quick else 6, seed=0))
        result["generation_state_only"] = stats.as_dict()
        stats = generate(
            GenConfig(out=Path(tmp) / "img", episodes_per_task=1, tasks=("restocking",), images=True, seed=0)
        )
        result["generation_with_images_128"] = stats.as_dict()
    result["command"] = " ".join(["python -m lwd_sim.bench", *(argv if argv is not None else sys.argv[1:])])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
