"""Behaviour-cloning probe: how hard is a task for imitation alone? (issue 3's calibration)

    python -m lwd_learner.bc_probe --task gongfu_tea [--demos 200] [--updates 6000] [--out DIR]
    python -m lwd_learner.bc_probe --summarize   # rewrite the results table (README.md) from the JSONs

Generates demonstrations with the offline generator's own demo settings (``lwd_sim.generate``,
demos only, DART share included), reads them back as MCAP episodes through the learner's reader,
trains the flow-matching reference (the SFT stage) on them, and runs it closed loop in the sim on
the demos' own scenes ("train") and on scenes no demo used ("unseen"), under each inference setting
asked for: chunk ticks executed before replanning and the flow's noise scale (0 = the flow
integrated from x0 = 0). Writes ``<out>/<task>.json`` with the command, the commit, every scene's
subtasks and the Table I number (success rate for grocery tasks, step-wise score for long ones).
The sim README's calibration tables come from this command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from lwd_learner.agent import LWDAgent
from lwd_learner.config import Conditioning, LearnerConfig, NetworkConfig, PolicyConfig
from lwd_learner.dataset import compute_normalizer, from_episode
from lwd_learner.provenance import git_info, write_probe_result
from lwd_learner.replay import ReplayBuffer
from lwd_learner.rollout import EpisodeSpec, RolloutConfig, SimFleet, agent_policy
from lwd_learner.stages import SFTConfig, run_sft
from lwd_protocol.episode import EpisodeSource, Outcome
from lwd_protocol.episode_io import read_episode
from lwd_protocol.robot_spec import ARM_JOINT_DIMS, CHUNK_HORIZON
from lwd_protocol.tasks import TASK_NAMES, task_info

RESULTS_DIR = Path(__file__).resolve().parents[1] / "bench" / "results" / "bc_probe"
UNSEEN_SEED_BASE = 900_000  # scenes of the "unseen" column (disjoint from the generator's seeds)


@dataclass(frozen=True)
class ProbeConfig:
    task: str
    demos: int = 200
    updates: int = 6000
    batch_size: int = 128
    width: int = 256
    conditioning: Conditioning = "concat"  # the velocity trunk's observation conditioning (NetworkConfig)
    lr: float = 1e-3
    eval_scenes: int = 8  # per column (train, unseen)
    fit_samples: int = 2048  # demo states the open-loop chunk fit is measured on (0: skip)
    execute_steps: tuple[int, ...] = (10,)
    noise_scales: tuple[float, ...] = (0.0, 1.0)
    data_seed: int = 0
    seed: int = 0
    workers: int = 2
    demo_disturbance: float | None = None  # None: the generator's default

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES:
            raise ValueError(f"unknown task {self.task!r}; known: {', '.join(TASK_NAMES)}")
        if self.demos < 1 or self.updates < 1 or self.eval_scenes < 1:
            raise ValueError("demos, updates and eval_scenes must be >= 1")


def generate_demos(config: ProbeConfig, folder: Path) -> dict:
    """Write `config.demos` demonstrations (the generator's demo path, split over workers)."""
    from lwd_sim.generate import GenConfig, generate

    gen = GenConfig(
        out=folder,
        episodes_per_task=config.demos,
        tasks=(config.task,),
        seed=config.data_seed,
        demos_only=True,
        shards_per_task=max(1, config.workers),
    )
    if config.demo_disturbance is not None:
        gen = dataclasses.replace(gen, demo_disturbance=config.demo_disturbance)
    return generate(gen, workers=config.workers).as_dict()


def network_config(width: int, obs_dim: int, action_dim: int, conditioning: Conditioning = "concat") -> NetworkConfig:
    """The learning bench's `cpu` network with its policy and observation layers `width` wide."""
    from lwd_learner.bench_learning import PROFILES

    return dataclasses.replace(
        PROFILES["cpu"].network,
        policy_hidden=(width, width, width),
        obs_hidden=(width,),
        policy_conditioning=conditioning,
        obs_dim=obs_dim,
        action_dim=action_dim,
        horizon=CHUNK_HORIZON,
    )


def run_probe(config: ProbeConfig, say=print) -> dict:
    """Generate, train, evaluate; return the results dict (see module docstring)."""
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lwd-bc-probe-") as tmp:
        gen_stats = generate_demos(config, Path(tmp))
        recorded = [read_episode(p, load_images=False) for p in sorted(Path(tmp).glob("*.mcap"))]
    recorded = [r for r in recorded if r.start.source is EpisodeSource.DEMO and r.end.outcome is Outcome.SUCCESS]
    demos = [from_episode(r) for r in recorded]
    if not demos:
        raise RuntimeError(f"the expert produced no successful demo of {config.task}")
    say(f"[bc_probe {config.task}] {len(demos)} demos, mean {np.mean([len(e.actions) for e in demos]):.0f} ticks")
    normalizer = compute_normalizer(demos)
    base = LearnerConfig.offline()
    learner = dataclasses.replace(
        base,
        network=network_config(config.width, normalizer.obs_dim, normalizer.action_dim, config.conditioning),
        policy=PolicyConfig(flow_steps=10, qam_loss_steps=3),
        optim=dataclasses.replace(base.optim, sft_lr=config.lr, decay_steps=config.updates),
    )
    buffer = ReplayBuffer(normalizer, CHUNK_HORIZON, learner.value.gamma)
    buffer.add_episodes(demos)
    agent = LWDAgent(learner)
    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    t0 = time.perf_counter()
    sft = SFTConfig(num_updates=config.updates, batch_size=config.batch_size, log_every=max(1, config.updates // 6))
    state, log = run_sft(agent, agent.init(init_key), buffer, sft, train_key)
    train_s = time.perf_counter() - t0
    policy = agent_policy(agent, state.reference_params)
    fit = chunk_fit(policy, normalizer, demos, np.random.default_rng(config.seed), config.fit_samples)
    if fit:
        say(f"[bc_probe {config.task}] open-loop fit, first {FIT_TICKS} ticks: {fit['all']}")

    demo_seeds = sorted({int(r.start.seed) for r in recorded if r.start.seed >= 0})
    train_seeds = demo_seeds[: config.eval_scenes]
    unseen_seeds = [
        s for s in range(UNSEEN_SEED_BASE, UNSEEN_SEED_BASE + 10 * config.eval_scenes) if s not in demo_seeds
    ]
    unseen_seeds = unseen_seeds[: config.eval_scenes]
    specs = [EpisodeSpec(config.task, s) for s in train_seeds + unseen_seeds]
    long_horizon = task_info(config.task).is_long_horizon
    fleet = SimFleet([config.task], envs_per_task=len(specs))
    runs = []
    try:
        for execute in config.execute_steps:
            for scale in config.noise_scales:
                t0 = time.perf_counter()
                rollout = RolloutConfig(execute_steps=execute, noise_scale=scale)
                results, _ = fleet.run(policy, normalizer, specs, np.random.default_rng(config.seed + 1), rollout)
                runs.append(
                    _summarize(results, len(train_seeds), long_horizon, execute, scale, time.perf_counter() - t0)
                )
                say(f"[bc_probe {config.task}] execute {execute} noise {scale}: {_line(runs[-1])}")
    finally:
        fleet.close()
    return {
        "task": config.task,
        "group": task_info(config.task).group.value,
        "metric": "score" if long_horizon else "success",
        "config": dataclasses.asdict(config),
        "command": " ".join(["python -m lwd_learner.bc_probe", *sys.argv[1:]]),
        "git": git_info(),
        "generated": gen_stats,
        "demos": len(demos),
        "mean_demo_ticks": float(np.mean([len(e.actions) for e in demos])),
        "sft": {"seconds": round(train_s, 1), "final_loss": _final_loss(log)},
        "fit": fit,
        "train_seeds": train_seeds,
        "unseen_seeds": unseen_seeds,
        "runs": runs,
        "runtime_s": round(time.perf_counter() - t_start, 1),
    }


FIT_TICKS = 10  # the first ticks of a chunk, what a replan-every-10 controller executes


def chunk_fit(policy, normalizer, episodes, rng: np.random.Generator, samples: int, ticks: int = FIT_TICKS) -> dict:
    """Open-loop fit of a policy on the episodes' own states: does imitation fail before closing the loop?

    At ``samples`` random ticks, the chunk sampled from zero noise (the deterministic inference
    setting) is decoded to joint targets and compared with the recorded targets of the next
    ``ticks`` ticks. Per state, the error is the largest absolute arm-joint difference [rad] over
    those ticks; returned as median / p90 overall and per subtask reached (when recorded), so a
    poorly fitted phase shows up even when it is a small share of the data.
    """
    usable = [ep for ep in episodes if len(ep.actions) > ticks]
    if samples <= 0 or not usable:
        return {}
    lengths = np.array([len(ep.actions) - ticks for ep in usable], np.float64)
    picks = rng.choice(len(usable), size=samples, p=lengths / lengths.sum())
    rows = [(usable[i], int(rng.integers(lengths[i]))) for i in picks]
    states = np.stack([ep.states[t] for ep, t in rows])
    obs = normalizer.obs(states, np.array([ep.task for ep, _ in rows]))
    noise = np.zeros((samples, CHUNK_HORIZON, normalizer.action_dim), np.float32)
    predicted = normalizer.denormalize_chunks(policy(obs, noise), normalizer.anchors(states))
    arm = list(ARM_JOINT_DIMS)
    recorded = np.stack([ep.actions[t : t + ticks] for ep, t in rows])
    errors = np.abs(predicted[:, :ticks, arm] - recorded[:, :, arm]).max(axis=(1, 2))
    subtasks = np.array([-1 if ep.subtask_index is None else int(ep.subtask_index[t]) for ep, t in rows])

    def stats(e: np.ndarray) -> dict:
        return {"n": int(e.size), "median": round(float(np.median(e)), 4), "p90": round(float(np.quantile(e, 0.9)), 4)}

    return {
        "ticks": ticks,
        "all": stats(errors),
        "by_subtask": {str(k): stats(errors[subtasks == k]) for k in sorted(set(subtasks.tolist())) if k >= 0},
    }


def _summarize(results, n_train: int, long_horizon: bool, execute: int, scale: float, seconds: float) -> dict:
    def column(rs) -> dict:
        subtasks = [int(r.episode.subtasks_done) for r in rs]
        scores = [float(r.score) for r in rs]
        success = [bool(r.success) for r in rs]
        value = float(np.mean(scores) if long_horizon else np.mean(success))
        return {"subtasks": subtasks, "success": success, "value": value, "reasons": [r.failure_reason for r in rs]}

    return {
        "execute_steps": execute,
        "noise_scale": scale,
        "train": column(results[:n_train]),
        "unseen": column(results[n_train:]),
        "seconds": round(seconds, 1),
    }


def _line(run: dict) -> str:
    return (
        f"train {run['train']['subtasks']} unseen {run['unseen']['subtasks']} | "
        f"train {run['train']['value']:.2f} unseen {run['unseen']['value']:.2f}"
    )


def _final_loss(log) -> float | None:
    losses = [row["fm_loss"] for row in log.history if "fm_loss" in row]
    return float(losses[-1]) if losses else None


def summary_markdown(folder: Path) -> str:
    """One table over every ``<task>.json`` in `folder`: the unseen-scene number per inference setting."""
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    results.sort(key=lambda r: TASK_NAMES.index(r["task"]))
    settings = sorted({(run["execute_steps"], run["noise_scale"]) for r in results for run in r["runs"]})
    head = " | ".join(f"replan {e}, noise {n:g}" for e, n in settings)
    lines = [
        "Behaviour cloning on generator demos (`python -m lwd_learner.bc_probe`): unseen scenes, success rate "
        "(grocery) or step-wise score (long-horizon); train scenes and per-scene subtasks in each JSON.",
        "",
        f"| task | metric | demos | {head} | commit |",
        "|---|---|---|" + "---|" * len(settings) + "---|",
    ]
    for r in results:
        by_setting = {(run["execute_steps"], run["noise_scale"]): run["unseen"]["value"] for run in r["runs"]}
        cells = " | ".join(f"{by_setting[s]:.2f}" if s in by_setting else "-" for s in settings)
        lines.append(f"| {r['task']} | {r['metric']} | {r['demos']} | {cells} | {r['git']['commit'][:8]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=TASK_NAMES, help="required unless --summarize")
    p.add_argument("--summarize", action="store_true", help="only (re)write <out>/README.md from the JSON files")
    p.add_argument("--demos", type=int, default=ProbeConfig.demos)
    p.add_argument("--updates", type=int, default=ProbeConfig.updates)
    p.add_argument("--width", type=int, default=ProbeConfig.width)
    p.add_argument("--conditioning", choices=typing.get_args(Conditioning), default=ProbeConfig.conditioning)
    p.add_argument("--batch-size", type=int, default=ProbeConfig.batch_size)
    p.add_argument("--eval-scenes", type=int, default=ProbeConfig.eval_scenes)
    p.add_argument("--execute-steps", type=int, nargs="+", default=list(ProbeConfig.execute_steps))
    p.add_argument("--noise-scales", type=float, nargs="+", default=list(ProbeConfig.noise_scales))
    p.add_argument("--demo-disturbance", type=float, default=None, help="override the generator's DART std [rad]")
    p.add_argument("--workers", type=int, default=ProbeConfig.workers)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    a = p.parse_args(argv)
    if a.summarize:
        (a.out / "README.md").write_text(summary_markdown(a.out))
        print(f"wrote {a.out / 'README.md'}")
        return 0
    if a.task is None:
        p.error("--task is required")
    config = ProbeConfig(
        task=a.task,
        demos=a.demos,
        updates=a.updates,
        width=a.width,
        conditioning=a.conditioning,
        batch_size=a.batch_size,
        eval_scenes=a.eval_scenes,
        execute_steps=tuple(a.execute_steps),
        noise_scales=tuple(a.noise_scales),
        demo_disturbance=a.demo_disturbance,
        workers=a.workers,
        seed=a.seed,
    )
    write_probe_result(a.out, config.task, run_probe(config), summary_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
