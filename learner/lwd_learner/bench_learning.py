"""Learning benchmark: the paper's Tables I-III, the online-improvement curve, Fig. 6 and speed.

    lwd bench learning --profile quick|cpu [--seeds N] [--methods lwd expectile ...] [--out DIR]
    python -m lwd_learner.bench_learning --profile quick

Pipeline per profile (all in this process, on the sim suite of ``lwd_sim``):

1. Offline buffer: ``lwd_sim.generate`` writes scripted-expert episodes (demo / rollout / play
   in the paper's Table IV proportions) as MCAP files; they are read back through
   ``lwd_protocol.episode_io.read_episode`` exactly as the learner reads fleet data.
2. Per seed: SFT of the reference on the demonstrations (shared by every method of that seed).
3. Methods (:data:`METHODS`, name -> train function, run in order; each returns the evaluated
   table rows): ``sft`` (the reference), ``lwd`` (offline DIVL+QAM, then online rounds with expert
   takeovers and 1:1 mixed replay), ``expectile`` (Table II: scalar IQL value, offline+online),
   ``constant_tau`` (Table III: offline with tau fixed at the adaptive runs' mean tau),
   ``hg_dagger`` and ``recap`` (the post-training baselines of
   :mod:`lwd_learner.baselines`, trained from the same reference on the same online budget).
   Register another with :func:`register_method`.
4. Evaluation (:mod:`lwd_learner.evaluate`): the same seeded scenes and noise for every policy;
   success rate on grocery tasks, step-wise score on long-horizon tasks.
5. Results: ``results.json`` (everything, per seed), ``results.md`` (tables as mean +- standard
   error over seeds) and PNG figures under ``learner/bench/results/learning/<profile>/``, with
   the command line and git commit that produced them.

Profiles: ``quick`` is a CI smoke test (tiny networks, two tasks, a few dozen updates: the
numbers say nothing about the method); ``cpu`` uses small MLPs on the sim's privileged state, 400
offline episodes per task (the demo count BC needed to generalise on restocking), 48000 SFT, 2000 offline and
1500 online updates, 6 online rounds of one episode per task, and evaluates (and runs the online
fleet) replanning every 10 ticks from zero flow noise. ``--tasks`` narrows it and ``--data-dir``
keeps the episodes. Results are rewritten after every method, so a run cut off keeps what it did.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lwd_learner import divl
from lwd_learner.agent import LWDAgent, TrainState
from lwd_learner.config import LearnerConfig, NetworkConfig, PolicyConfig
from lwd_learner.critic_diagnostics import agent_q_fn, critic_diagnostics
from lwd_learner.dataset import EpisodeArrays, Normalizer, compute_normalizer, load_episodes
from lwd_learner.evaluate import EvalConfig, EvalResult, evaluate
from lwd_learner.provenance import git_info
from lwd_learner.replay import ReplayBuffer
from lwd_learner.rollout import PolicyFn, SimFleet, TakeoverConfig, agent_policy
from lwd_learner.stages import (
    OfflineConfig,
    OnlineConfig,
    SFTConfig,
    StageLog,
    method_learner,
    run_offline,
    run_online,
    run_sft,
)
from lwd_protocol.episode import EpisodeSource, Outcome
from lwd_protocol.robot_spec import CHUNK_HORIZON
from lwd_protocol.tasks import TASK_NAMES, TaskGroup, task_info

RESULTS_ROOT = Path(__file__).resolve().parents[1] / "bench" / "results" / "learning"


# ----------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class BenchProfile:
    """Sizes of one benchmark run. ``tasks`` None = every task lwd_sim implements."""

    name: str
    tasks: tuple[str, ...] | None
    episodes_per_task: int  # offline buffer (generator episodes per task)
    seeds: int
    network: NetworkConfig  # obs_dim / action_dim / horizon are filled in from the data
    flow_steps: int
    qam_loss_steps: int | None
    sft: SFTConfig
    offline: OfflineConfig
    online: OnlineConfig  # episodes_per_round is replaced by online_episodes_per_task x tasks
    online_episodes_per_task: int  # per round
    eval_episodes_per_task: int
    envs_per_task: int = 1
    max_steps: int | None = None  # env time-limit override (None = the tasks' own limits)
    methods: tuple[str, ...] = ("sft", "lwd", "expectile", "constant_tau", "hg_dagger", "recap")
    data_seed: int = 0
    sft_lr: float = 3e-4  # flow-matching BC learning rate of the reference (LearnerConfig default 3e-4)
    # The sampler the policies are evaluated with *and* the online fleet runs (EvalConfig /
    # OnlineConfig): ticks executed per chunk (None = all H) and flow noise scale.
    eval_execute_steps: int | None = None
    eval_noise_scale: float = 1.0
    # QAM temperature of every LWD variant (the paper's 2.0). Q here is in [0, 1] and ||grad_a Q|| over
    # a normalised chunk measured ~0.01, so 2.0 moves the policy ~1e-3 std (session 10 sweep in the README).
    qam_lam: float = PolicyConfig().lam


_TINY = NetworkConfig(
    policy_hidden=(64, 64),
    critic_hidden=(64,),
    value_hidden=(64,),
    obs_hidden=(64,),
    obs_embed_dim=32,
    time_dim=16,
    pool_dim=16,
    pool_heads=2,
)
# The velocity field's linear chunk skip (networks.VelocityField) lets a 256-wide trunk fit the
# 480-D chunks (without it: sample MSE 0.65 of the action variance after 4.5k SFT updates).
_SMALL = NetworkConfig(
    policy_hidden=(256, 256, 256),
    critic_hidden=(256, 256),
    value_hidden=(256,),
    obs_hidden=(256,),
    obs_embed_dim=128,
    time_dim=32,
    pool_dim=32,
    pool_heads=2,
)

PROFILES: dict[str, BenchProfile] = {
    "quick": BenchProfile(
        name="quick",
        tasks=("restocking", "gongfu_tea"),
        episodes_per_task=4,
        seeds=3,
        network=_TINY,
        flow_steps=4,
        qam_loss_steps=2,
        sft=SFTConfig(num_updates=200, batch_size=64, log_every=50),
        offline=OfflineConfig(num_updates=40, batch_size=64, log_every=20),
        online=OnlineConfig(
            num_rounds=2,
            updates_per_round=20,
            batch_size=64,
            publish_every=10,
            eval_every_rounds=1,
            log_every=10,
            takeover=TakeoverConfig(stall_fraction=0.5),
        ),
        online_episodes_per_task=1,
        eval_episodes_per_task=2,
        max_steps=450,
    ),
    "cpu": BenchProfile(
        name="cpu",
        tasks=None,
        # ~40% are demonstrations. Measured on restocking (SFT, 6 unseen scenes): ~20 demos -> 0/6
        # (the policy replays training scenes only), ~170 demos -> 4/6.
        episodes_per_task=400,
        seeds=3,
        network=_SMALL,
        flow_steps=10,
        qam_loss_steps=3,
        # One policy for 8 tasks needs ~8x the single-task probe's 6000 updates (session 9, SFT alone,
        # 4 unseen scenes per task, replan 10 / noise 0): 6000 -> restocking 0.00, gongfu_tea 0.00;
        # 48000 -> 1.00 and 0.46. Twice the width fit better (loss 103 vs 140) and scored the same.
        sft=SFTConfig(num_updates=48000, batch_size=128, log_every=500),
        # 600 offline updates left every LWD variant within 0.01 of SFT (session 8); 2000 at ~33/s
        # is a minute per run. Online: 6 rounds x 1 episode per task; episodes, not updates, are the
        # cost there (~4 s each against 250 updates in ~2 s).
        offline=OfflineConfig(num_updates=2000, batch_size=128, log_every=100),
        online=OnlineConfig(
            num_rounds=6,
            updates_per_round=250,
            batch_size=128,
            publish_every=50,
            eval_every_rounds=3,
            log_every=50,
            takeover=TakeoverConfig(stall_fraction=0.5),
        ),
        online_episodes_per_task=1,
        eval_episodes_per_task=8,
        sft_lr=1e-3,
        # Replanning every 10 ticks from zero flow noise: whole chunks from N(0, I) put every policy,
        # SFT included, near 0 (session 8: gongfu_tea BC 0.80 -> 0.21), where nothing can be compared.
        eval_execute_steps=10,
        eval_noise_scale=0.0,
    ),
}


# ----------------------------------------------------------------------------- method registry


@dataclass
class MethodResult:
    """What one method produced for one seed: evaluated table rows, stage logs, extras."""

    rows: dict[str, EvalResult]
    logs: dict[str, StageLog] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodContext:
    """Everything a method's train function may use for one seed (shared data, fleet, reference).

    ``sft_state`` is the seed's TrainState after SFT (reference trained, RL not started): every
    method starts from its frozen ``sft_state.reference_params`` (LWD variants with fresh critic
    and value networks, since their shapes depend on the value mode).
    ``evaluate(policy, keep_episodes=False)`` runs the fixed evaluation. ``agent(config)`` returns a
    cached :class:`LWDAgent` (one jit compilation per config for the whole run). ``earlier`` maps
    method names already run to their results for all seeds so far.
    """

    profile: BenchProfile
    seed: int
    seed_index: int
    key: jax.Array
    tasks: tuple[str, ...]
    normalizer: Normalizer
    network: NetworkConfig
    episodes: list[EpisodeArrays]
    demos: ReplayBuffer
    offline: ReplayBuffer
    fleet: SimFleet
    sft_state: TrainState
    sft_agent: LWDAgent
    sft_log: StageLog
    online: OnlineConfig
    evaluate: Callable[..., EvalResult]
    agent: Callable[[LearnerConfig], LWDAgent]
    earlier: dict[str, list[MethodResult]]
    log: Callable[[str], None] = print

    def config(self, stage: str, **value: Any) -> LearnerConfig:
        """The stage's LearnerConfig (``"offline"``/``"online"`` paper defaults) at this profile's sizes."""
        base = LearnerConfig.offline() if stage == "offline" else LearnerConfig.online()
        prof = self.profile
        total = prof.offline.num_updates + prof.online.num_rounds * prof.online.updates_per_round
        return dataclasses.replace(
            base,
            network=self.network,
            value=dataclasses.replace(base.value, **value),
            policy=dataclasses.replace(
                base.policy, flow_steps=prof.flow_steps, qam_loss_steps=prof.qam_loss_steps, lam=prof.qam_lam
            ),
            optim=dataclasses.replace(base.optim, decay_steps=max(total, 1), sft_lr=prof.sft_lr),
        )

    def new_online_buffer(self) -> ReplayBuffer:
        return ReplayBuffer(self.normalizer, self.demos.horizon, self.demos.gamma)


TrainFn = Callable[[MethodContext], MethodResult]


def _method_sft(ctx: MethodContext) -> MethodResult:
    policy = agent_policy(ctx.sft_agent, ctx.sft_state.reference_params)
    return MethodResult(rows={"SFT": ctx.evaluate(policy)}, logs={"sft": ctx.sft_log})


def _lwd_variant(
    ctx: MethodContext, label: str, online: bool, record_curve: bool = False, **value: Any
) -> MethodResult:
    keys = jax.random.split(ctx.key, 3)
    off_agent = ctx.agent(ctx.config("offline", **value))
    # Fresh critic / value (their shapes depend on the value mode) around the seed's frozen reference.
    state = off_agent.init(keys[2]).replace(reference_params=ctx.sft_state.reference_params)
    state = off_agent.start_rl(state)
    state, off_log = run_offline(off_agent, state, ctx.offline, ctx.profile.offline, keys[0])
    result = MethodResult(rows={}, logs={"offline": off_log})
    result.extra["offline_tau_mean"] = off_log.mean("tau_mean")
    result.extra["offline_entropy_mean"] = off_log.mean("entropy_mean")
    probe = _critic_probe(ctx)
    result.extra["critic_offline"] = probe(off_agent, state)
    offline_eval = ctx.evaluate(agent_policy(off_agent, state.policy_params))
    result.rows[f"{label} (Offline)" if online else label] = offline_eval
    ctx.log(f"  {label} offline: average {offline_eval.average:.3f} ({off_log.updates_per_s:.1f} updates/s)")
    if not online:
        return result
    on_agent = ctx.agent(ctx.config("online", **value))
    evals: list[EvalResult] = []
    keep = record_curve and ctx.seed_index == 0

    def curve_eval(policy: PolicyFn) -> EvalResult:
        evals.append(ctx.evaluate(policy, keep_episodes=keep))
        return evals[-1]

    versions: list[int] = []
    online_cfg = ctx.online if record_curve else dataclasses.replace(ctx.online, eval_every_rounds=0)
    state, on_log = run_online(
        on_agent,
        state,
        ctx.offline,
        ctx.new_online_buffer(),
        ctx.fleet,
        online_cfg,
        keys[1],
        on_policy=lambda version, _state: versions.append(version),
        evaluate_fn=curve_eval,
    )
    last_round = online_cfg.num_rounds - 1
    if on_log.curve and on_log.curve[-1]["round"] == last_round:
        final = evals[-1]  # the curve's last point already evaluated the final policy
    else:
        final = ctx.evaluate(agent_policy(on_agent, state.policy_params), keep_episodes=keep)
    result.rows[f"{label} (Online)"] = final
    result.logs["online"] = on_log
    result.extra["online_tau_mean"] = on_log.mean("tau_mean")
    result.extra["critic_online"] = probe(on_agent, state)
    result.extra["published_versions"] = len(versions)
    if record_curve:
        point0 = {"round": -1, "updates": 0, "online_episodes": 0, "robot_hours": 0.0}
        point0.update({k: v for k, v in offline_eval.to_dict().items() if k != "per_task"})
        result.extra["curve"] = [point0, *on_log.curve]
    if keep:
        result.extra["value_traces"] = value_traces(on_agent, state, ctx.normalizer, final.episodes, ctx.episodes)
    ctx.log(f"  {label} online: average {final.average:.3f} ({on_log.updates_per_s:.1f} updates/s)")
    return result


def _critic_probe(ctx: MethodContext, rows: int = 1024) -> Callable[[LWDAgent, TrainState], dict[str, float]]:
    """Critic diagnostics on one fixed offline batch per seed, so offline and online critics see the same rows."""
    batch = ctx.offline.sample(np.random.default_rng([ctx.seed, 7919]), rows)
    obs, actions = jax.numpy.asarray(batch["obs"]), jax.numpy.asarray(batch["actions"])
    key = jax.random.fold_in(jax.random.key(ctx.seed), 7919)

    def probe(agent: LWDAgent, state: TrainState) -> dict[str, float]:
        return critic_diagnostics(agent_q_fn(agent, state.critic_params), obs, actions, batch["return_to_go"], key)

    return probe


def _method_lwd(ctx: MethodContext) -> MethodResult:
    return _lwd_variant(ctx, "LWD", online=True, record_curve=True)


def _method_expectile(ctx: MethodContext) -> MethodResult:
    return _lwd_variant(ctx, "Expectile", online=True, value_mode="expectile")


def _method_constant_tau(ctx: MethodContext) -> MethodResult:
    adaptive = [r.extra["offline_tau_mean"] for r in ctx.earlier.get("lwd", [])]
    if not adaptive:
        raise RuntimeError("constant_tau needs the lwd method to run first (it uses the adaptive runs' mean tau)")
    tau = float(np.mean(adaptive))
    result = _lwd_variant(ctx, "LWD Offline, constant tau", online=False, tau_mode="constant", tau_base=tau)
    result.extra["constant_tau"] = tau
    return result


def _post_training_baseline(ctx: MethodContext, name: str, label: str, online: OnlineConfig) -> MethodResult:
    """A :mod:`lwd_learner.baselines` method from the reference on the demos + its own online data."""
    from lwd_learner.baselines import make_method

    method = make_method(name, ctx.config("online"))
    k_init, k_run = jax.random.split(ctx.key)
    state = method.init(k_init, reference_params=ctx.sft_state.reference_params)
    learner = method_learner(method)
    state, log = run_online(learner, state, ctx.demos, ctx.new_online_buffer(), ctx.fleet, online, k_run)
    row = ctx.evaluate(learner.policy(state))
    ctx.log(f"  {label}: average {row.average:.3f} ({log.updates_per_s:.1f} updates/s)")
    return MethodResult(rows={label: row}, logs={"online": log})


def _method_hg_dagger(ctx: MethodContext) -> MethodResult:
    """HG-DAgger (App. C1): same rounds, takeovers and update budget as LWD online."""
    return _post_training_baseline(ctx, "hg_dagger", "HG-DAgger", dataclasses.replace(ctx.online, eval_every_rounds=0))


def _method_recap(ctx: MethodContext) -> MethodResult:
    """RECAP (App. C1): two rounds of autonomous rollouts (no takeovers), same episode and update budget."""
    total_eps = ctx.online.num_rounds * ctx.online.episodes_per_round
    total_updates = ctx.online.num_rounds * ctx.online.updates_per_round
    online = dataclasses.replace(
        ctx.online,
        num_rounds=2,
        episodes_per_round=max(1, total_eps // 2),
        updates_per_round=max(1, total_updates // 2),
        takeover=None,
        eval_every_rounds=0,
    )
    return _post_training_baseline(ctx, "recap", "RECAP", online)


METHODS: dict[str, TrainFn] = {
    "sft": _method_sft,
    "lwd": _method_lwd,
    "expectile": _method_expectile,
    "constant_tau": _method_constant_tau,
    "hg_dagger": _method_hg_dagger,
    "recap": _method_recap,
}


def register_method(name: str, train: TrainFn) -> None:
    """Add (or replace) a benchmark method; ``train(ctx) -> MethodResult`` with table-row labels."""
    METHODS[name] = train


# ----------------------------------------------------------------------------- value traces (Fig. 6)


def value_quantiles(agent: LWDAgent, state: TrainState, normalizer: Normalizer, episode: EpisodeArrays) -> dict:
    """Quantiles of the DIVL value distribution at every state of an episode (Fig. 6 data)."""
    obs = normalizer.obs(episode.states, episode.task)
    logits = agent.value.apply(state.value_params, obs)
    cfg = agent.config.value
    out: dict[str, Any] = {"task": episode.task, "outcome": episode.outcome.value, "source": episode.source.value}
    out["subtask_index"] = [] if episode.subtask_index is None else [int(x) for x in episode.subtask_index]
    if cfg.value_mode != "divl":
        out["value"] = [float(x) for x in np.asarray(logits[:, 0])]
        return out
    probs = jax.nn.softmax(logits, axis=-1)
    atoms = agent.atoms
    for tau in (0.1, 0.5, 0.9):
        out[f"q{int(tau * 100)}"] = [float(x) for x in np.asarray(divl.quantile(probs, atoms, tau))]
    adaptive = divl.adaptive_tau(probs, cfg.tau_base, cfg.alpha, cfg.tau_min, cfg.tau_max)
    out["adaptive"] = [float(x) for x in np.asarray(divl.quantile(probs, atoms, adaptive))]
    out["mean"] = [float(x) for x in np.asarray(probs @ atoms)]
    return out


def value_traces(
    agent: LWDAgent,
    state: TrainState,
    normalizer: Normalizer,
    eval_episodes: Sequence[EpisodeArrays],
    offline_episodes: Sequence[EpisodeArrays],
) -> dict[str, dict]:
    """A successful and a failed long-horizon episode (evaluation first, else offline data) and their values."""
    long_tasks = [t for t in normalizer.tasks if task_info(t).is_long_horizon]
    pool = [e for e in eval_episodes if e.task in long_tasks]
    offline = [e for e in offline_episodes if e.task in long_tasks]
    success = next((e for e in pool if e.success), None) or next(
        (e for e in offline if e.success and e.source is EpisodeSource.DEMO), None
    )
    failed = [e for e in pool if not e.success] or [
        e for e in offline if e.outcome is Outcome.FAILURE and e.source is not EpisodeSource.PLAY
    ]
    failed = failed or [e for e in offline if e.outcome is Outcome.FAILURE]
    traces = {}
    if success is not None:
        traces["success"] = value_quantiles(agent, state, normalizer, success)
    if failed:
        # the failure that got furthest: its value should rise with the progress, then fall at the mistake
        # (Fig. 6); a policy that never moved gives a flat line that shows nothing
        traces["failure"] = value_quantiles(agent, state, normalizer, max(failed, key=lambda e: (e.score, e.length)))
    return traces


# ----------------------------------------------------------------------------- statistics and tables


def mean_se(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, standard error (sample std / sqrt(n); NaN for n < 2) and count of the finite values."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
    if x.size == 0:
        return float("nan"), float("nan"), 0
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else float("nan")
    return float(x.mean()), se, int(x.size)


def fmt(values: Sequence[float], digits: int = 2) -> str:
    mean, se, n = mean_se(values)
    if n == 0:
        return "–"
    return f"{mean:.{digits}f}" if not np.isfinite(se) else f"{mean:.{digits}f} ± {se:.{digits}f}"


def _row_values(rows: dict[str, list[EvalResult]], label: str, tasks: Sequence[str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {t: [r.per_task[t].value for r in rows[label]] for t in tasks}
    out["grocery"] = [r.group_average(TaskGroup.GROCERY) for r in rows[label]]
    out["long_horizon"] = [r.group_average(TaskGroup.LONG_HORIZON) for r in rows[label]]
    out["average"] = [r.average for r in rows[label]]
    return out


def _markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


TABLE1_ROWS = ("SFT", "RECAP", "HG-DAgger", "LWD (Offline)", "LWD (Online)")


def build_tables(rows: dict[str, list[EvalResult]], tasks: Sequence[str], constant_tau: float | None) -> dict[str, Any]:
    """Aggregated Tables I-III (mean, se, n per cell) and their markdown."""
    titles = [task_info(t).title for t in tasks]
    has_groups = {g: any(task_info(t).group is g for t in tasks) for g in TaskGroup}
    agg: dict[str, Any] = {}
    md: dict[str, str] = {}

    def cell(values: list[float]) -> dict[str, float]:
        mean, se, n = mean_se(values)
        return {"mean": mean, "se": se, "n": n}

    t1 = [label for label in TABLE1_ROWS if label in rows]
    agg["table1"] = {label: {k: cell(v) for k, v in _row_values(rows, label, tasks).items()} for label in t1}
    body = []
    for label in t1:
        vals = _row_values(rows, label, tasks)
        body.append(
            [
                label,
                *[fmt(vals[t]) for t in tasks],
                fmt(vals["grocery"]),
                fmt(vals["long_horizon"]),
                fmt(vals["average"]),
            ]
        )
    md["table1"] = _markdown_table(["Method", *titles, "Grocery avg", "Long-horizon avg", "Average"], body)

    if "Expectile (Offline)" in rows and "LWD (Offline)" in rows:
        pairs = [("Expectile Regression", "Expectile"), ("DIVL (Ours)", "LWD")]
        agg["table2"] = {}
        body = []
        for name, prefix in pairs:
            row_cells, row_md = {}, [name]
            for group, gkey in ((TaskGroup.GROCERY, "grocery"), (TaskGroup.LONG_HORIZON, "long_horizon")):
                for stage in ("Offline", "Online"):
                    label = f"{prefix} ({stage})"
                    values = _row_values(rows, label, tasks)[gkey] if label in rows else []
                    row_cells[f"{gkey}_{stage.lower()}"] = cell(values)
                    row_md.append(fmt(values) if has_groups[group] else "–")
            agg["table2"][name] = row_cells
            body.append(row_md)
        md["table2"] = _markdown_table(["Method", "Short offline", "Short online", "Long offline", "Long online"], body)

    if "LWD Offline, constant tau" in rows and "LWD (Offline)" in rows:
        tau_txt = f" (τ = {constant_tau:.3f})" if constant_tau is not None else ""
        agg["table3"] = {}
        body = []
        for name, label in (
            (f"LWD Offline, constant τ{tau_txt}", "LWD Offline, constant tau"),
            ("LWD Offline, adaptive τ", "LWD (Offline)"),
        ):
            vals = _row_values(rows, label, tasks)
            agg["table3"][name] = {k: cell(v) for k, v in vals.items()}
            body.append([name, *[fmt(vals[t]) for t in tasks], fmt(vals["average"])])
        md["table3"] = _markdown_table(["Method", *titles, "Average"], body)
    return {"aggregate": agg, "markdown": md}


def orderings(rows: dict[str, list[EvalResult]], tasks: Sequence[str]) -> list[dict[str, Any]]:
    """The issue's target orderings (#7), each with the two means compared and whether it holds."""
    checks = []

    def mean_of(label: str, key: str) -> float:
        return mean_se(_row_values(rows, label, tasks)[key])[0] if label in rows else float("nan")

    def add(text: str, a: float, b: float, strict: bool = True) -> None:
        holds = bool(np.isfinite(a) and np.isfinite(b) and (a > b if strict else a >= b))
        checks.append({"claim": text, "left": a, "right": b, "holds": holds})

    long_present = any(task_info(t).is_long_horizon for t in tasks)
    key = "long_horizon" if long_present else "average"
    for base in ("SFT", "RECAP", "HG-DAgger", "LWD (Offline)", "Expectile (Online)"):
        if base in rows and "LWD (Online)" in rows:
            add(
                f"LWD (Online) > {base} on the {key.replace('_', '-')} average",
                mean_of("LWD (Online)", key),
                mean_of(base, key),
            )
    if "LWD (Offline)" in rows and "SFT" in rows:
        add("LWD (Offline) > SFT (average)", mean_of("LWD (Offline)", "average"), mean_of("SFT", "average"))
    for stage in ("Offline", "Online"):
        if f"LWD ({stage})" in rows and f"Expectile ({stage})" in rows:
            add(
                f"DIVL > expectile, {stage.lower()}, {key.replace('_', '-')}",
                mean_of(f"LWD ({stage})", key),
                mean_of(f"Expectile ({stage})", key),
            )
    if "LWD Offline, constant tau" in rows and "LWD (Offline)" in rows:
        add(
            "adaptive τ ≥ constant τ (offline average)",
            mean_of("LWD (Offline)", "average"),
            mean_of("LWD Offline, constant tau", "average"),
            strict=False,
        )
    return checks


# ----------------------------------------------------------------------------- plots


def _plot_curve(curves: list[list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    points = min(len(c) for c in curves)
    x = np.mean([[c[i]["online_episodes"] for i in range(points)] for c in curves], axis=0)
    hours = np.mean([[c[i]["robot_hours"] for i in range(points)] for c in curves], axis=0)
    for key, label in (("average", "All tasks"), ("grocery", "Grocery"), ("long_horizon", "Long-horizon")):
        ys = np.array([[c[i][key] for i in range(points)] for c in curves], float)
        if not np.all(np.isfinite(ys)):
            continue
        mean = ys.mean(axis=0)
        se = ys.std(axis=0, ddof=1) / np.sqrt(len(curves)) if len(curves) > 1 else np.zeros_like(mean)
        ax.plot(x, mean, marker="o", label=label)
        ax.fill_between(x, mean - se, mean + se, alpha=0.2)
    ax.set_xlabel("online episodes (robot-hours: " + ", ".join(f"{h:.2f}" for h in hours) + ")", fontsize=8)
    ax.set_ylabel("success rate / step-wise score")
    ax.set_title(f"LWD online improvement (mean ± s.e., {len(curves)} seeds)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_values(traces: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ("success", "failure") if k in traces]
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        tr = traces[kind]
        if "q50" in tr:
            t = np.arange(len(tr["q50"])) / 30.0
            ax.fill_between(t, tr["q10"], tr["q90"], alpha=0.25, label="10–90% quantiles")
            ax.plot(t, tr["q50"], label="median")
            ax.plot(t, tr["adaptive"], label="adaptive-τ quantile", lw=1)
        else:
            t = np.arange(len(tr["value"])) / 30.0
            ax.plot(t, tr["value"], label="V")
        ax.set_ylim(-0.1, 1.1)
        ax.set_xlabel("time [s]")
        ax.set_ylabel("value")
        ax.set_title(f"{task_info(tr['task']).title}: {kind} ({tr['source']}, {tr['outcome']})")
        if tr["subtask_index"]:
            ax2 = ax.twinx()
            ax2.step(t, tr["subtask_index"], color="k", alpha=0.4, where="post")
            ax2.set_ylabel("subtasks done")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_tau(logs: list[StageLog], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    offset = 0
    for log in logs:
        steps = [offset + h["step"] for h in log.history if "tau_mean" in h]
        ax.plot(steps, [h["tau_mean"] for h in log.history if "tau_mean" in h], color="C0")
        ax.plot(steps, [h["entropy_mean"] for h in log.history if "entropy_mean" in h], color="C1")
        offset += log.updates
        ax.axvline(offset, color="k", alpha=0.2)
    ax.plot([], [], color="C0", label="τ (batch mean)")
    ax.plot([], [], color="C1", label="normalised entropy")
    ax.set_xlabel("update (offline | online)")
    ax.legend()
    ax.set_title("Adaptive τ and value entropy (cf. paper Fig. 8)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- the run


def resolve_tasks(requested: Sequence[str] | None) -> tuple[str, ...]:
    """Requested tasks (or all), in suite order, restricted to what lwd_sim implements; error if none."""
    from lwd_sim.tasks import IMPLEMENTED_TASKS

    if requested:
        unknown = [t for t in requested if t not in TASK_NAMES]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {TASK_NAMES}")
        missing = [t for t in requested if t not in IMPLEMENTED_TASKS]
        if missing:
            raise ValueError(f"task(s) {missing} have no sim implementation yet; available: {IMPLEMENTED_TASKS}")
        return tuple(t for t in TASK_NAMES if t in requested)
    return tuple(t for t in TASK_NAMES if t in IMPLEMENTED_TASKS)


def offline_data(
    tasks: tuple[str, ...], episodes_per_task: int, seed: int, data_dir: Path | None
) -> tuple[list[EpisodeArrays], dict[str, Any]]:
    """Generate (or reuse, if ``data_dir`` already holds episodes) the offline MCAP buffer and read it back."""
    from lwd_sim.generate import GenConfig, generate

    def read(folder: Path) -> list[EpisodeArrays]:
        return [e for e in load_episodes(sorted(folder.glob("*.mcap"))) if e.task in tasks]

    if data_dir is not None and any(Path(data_dir).glob("*.mcap")):
        t0 = time.perf_counter()
        episodes = read(Path(data_dir))
        return episodes, {"reused": str(data_dir), "read_s": round(time.perf_counter() - t0, 2)}
    with tempfile.TemporaryDirectory(prefix="lwd-bench-data-") as tmp:
        folder = Path(data_dir) if data_dir is not None else Path(tmp)
        workers = os.cpu_count() or 1
        # Each task split over every worker: one long-horizon task alone would otherwise keep one core
        # busy for most of the generation (2 tasks on 2 cores: 13 min for gongfu_tea's 400 episodes).
        gen = GenConfig(
            out=folder, episodes_per_task=episodes_per_task, tasks=tasks, seed=seed, shards_per_task=workers
        )
        stats = generate(gen, workers=workers)
        t0 = time.perf_counter()
        episodes = read(folder)
        info = {"generated": stats.as_dict(), "read_s": round(time.perf_counter() - t0, 2)}
    return episodes, info


def run(
    profile: str | BenchProfile = "quick",
    out_dir: Path | None = None,
    seeds: int | None = None,
    methods: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    data_dir: Path | None = None,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
    episodes_per_task: int | None = None,
    eval_execute_steps: int | None = None,
    eval_noise_scale: float | None = None,
    sft_updates: int | None = None,
    qam_lam: float | None = None,
) -> dict[str, Any]:
    """Run a benchmark profile and write ``results.json``, ``results.md`` and PNGs; returns the JSON dict.

    ``eval_execute_steps`` / ``eval_noise_scale`` override the profile's evaluation sampler and
    ``sft_updates`` its SFT length (e.g. ``--methods sft`` to size the reference's budget); ``qam_lam``
    its QAM temperature."""
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    if seeds is not None:
        prof = dataclasses.replace(prof, seeds=seeds)
    if eval_execute_steps is not None:
        prof = dataclasses.replace(prof, eval_execute_steps=eval_execute_steps)
    if eval_noise_scale is not None:
        if eval_noise_scale < 0:
            raise ValueError(f"eval_noise_scale must be >= 0, got {eval_noise_scale}")
        prof = dataclasses.replace(prof, eval_noise_scale=eval_noise_scale)
    if sft_updates is not None:
        if sft_updates < 1:
            raise ValueError(f"sft_updates must be >= 1, got {sft_updates}")
        prof = dataclasses.replace(prof, sft=dataclasses.replace(prof.sft, num_updates=sft_updates))
    if qam_lam is not None:
        if not qam_lam > 0:
            raise ValueError(f"qam_lam must be > 0, got {qam_lam}")
        prof = dataclasses.replace(prof, qam_lam=qam_lam)
    if episodes_per_task is not None:
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
        prof = dataclasses.replace(prof, episodes_per_task=episodes_per_task)
    if methods is not None:
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
        prof = dataclasses.replace(prof, methods=tuple(methods))
    if prof.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {prof.seeds}")
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out_dir) if out_dir is not None else RESULTS_ROOT / prof.name
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    task_list = resolve_tasks(tasks or prof.tasks)
    say(f"[bench learning/{prof.name}] tasks {task_list}, {prof.seeds} seeds, methods {prof.methods}")

    episodes, data_info = offline_data(task_list, prof.episodes_per_task, prof.data_seed, data_dir)
    normalizer = compute_normalizer(episodes)
    horizon = CHUNK_HORIZON
    network = dataclasses.replace(
        prof.network, obs_dim=normalizer.obs_dim, action_dim=normalizer.action_dim, horizon=horizon
    )
    gamma = LearnerConfig().value.gamma
    demos = ReplayBuffer(normalizer, horizon, gamma)
    demos.add_episodes([e for e in episodes if e.source is EpisodeSource.DEMO])
    offline = ReplayBuffer(normalizer, horizon, gamma)
    offline.add_episodes(episodes)
    data_info["offline_buffer"] = offline.summary()
    data_info["demo_buffer"] = demos.summary()
    say(f"  data: {offline.summary()} in {time.perf_counter() - t_start:.1f}s")
    online_cfg = dataclasses.replace(
        prof.online,
        episodes_per_round=prof.online_episodes_per_task * len(task_list),
        execute_steps=prof.eval_execute_steps,
        noise_scale=prof.eval_noise_scale,
    )
    fleet = SimFleet(task_list, prof.envs_per_task, prof.max_steps)
    eval_cfg = EvalConfig(
        episodes_per_task=prof.eval_episodes_per_task,
        execute_steps=prof.eval_execute_steps,
        noise_scale=prof.eval_noise_scale,
    )

    def evaluate_policy(policy: PolicyFn, keep_episodes: bool = False) -> EvalResult:
        return evaluate(fleet, policy, normalizer, dataclasses.replace(eval_cfg, keep_episodes=keep_episodes), horizon)

    agents: dict[LearnerConfig, LWDAgent] = {}

    def agent_for(config: LearnerConfig) -> LWDAgent:
        if config not in agents:
            agents[config] = LWDAgent(config)
        return agents[config]

    base_config = dataclasses.replace(
        LearnerConfig.offline(),
        network=network,
        policy=PolicyConfig(flow_steps=prof.flow_steps, qam_loss_steps=prof.qam_loss_steps),
        optim=dataclasses.replace(LearnerConfig().optim, sft_lr=prof.sft_lr, decay_steps=max(prof.sft.num_updates, 1)),
    )
    seed_list = list(range(prof.seeds))
    sft: dict[int, tuple[TrainState, StageLog]] = {}
    for seed in seed_list:
        agent = agent_for(base_config)
        k_init, k_sft = jax.random.split(jax.random.fold_in(jax.random.key(seed), 0))
        state, sft_log = run_sft(agent, agent.init(k_init), demos, prof.sft, k_sft)
        sft[seed] = (state, sft_log)
        say(f"  seed {seed}: SFT {sft_log.updates} updates, {sft_log.updates_per_s:.1f}/s")

    results: dict[str, list[MethodResult]] = {}
    method_seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for m_index, name in enumerate(prof.methods):
        t_method = time.perf_counter()
        say(f"[method {name}]")
        for seed in seed_list:
            ctx = MethodContext(
                profile=prof,
                seed=seed,
                seed_index=seed_list.index(seed),
                key=jax.random.fold_in(jax.random.key(seed), 1 + m_index),
                tasks=task_list,
                normalizer=normalizer,
                network=network,
                episodes=episodes,
                demos=demos,
                offline=offline,
                fleet=fleet,
                sft_state=sft[seed][0],
                sft_agent=agent_for(base_config),
                sft_log=sft[seed][1],
                online=online_cfg,
                evaluate=evaluate_policy,
                agent=agent_for,
                earlier=results,
                log=say,
            )
            try:
                results.setdefault(name, []).append(METHODS[name](ctx))
            except ImportError as exc:  # an optional baseline module is not there (yet)
                skipped[name] = f"{type(exc).__name__}: {exc}"
                say(f"  skipped {name}: {skipped[name]}")
                results.pop(name, None)
                break
        method_seconds[name] = time.perf_counter() - t_method
        say(f"  {name}: {method_seconds[name]:.0f}s")
        if m_index < len(prof.methods) - 1 and name in results:  # a long run cut off keeps what it finished
            partial = _assemble(prof, task_list, results, data_info, method_seconds, skipped, command)
            partial["runtime_s"] = round(time.perf_counter() - t_start, 1)
            partial["incomplete"] = f"methods still to run: {list(prof.methods[m_index + 1 :])}"
            _write(out, partial, results)
    fleet.close()

    report = _assemble(prof, task_list, results, data_info, method_seconds, skipped, command)
    report["runtime_s"] = round(time.perf_counter() - t_start, 1)
    _write(out, report, results)
    say(f"[bench learning/{prof.name}] done in {report['runtime_s']:.0f}s -> {out}")
    return report


def _assemble(
    prof: BenchProfile,
    tasks: tuple[str, ...],
    results: dict[str, list[MethodResult]],
    data_info: dict[str, Any],
    method_seconds: dict[str, float],
    skipped: dict[str, str],
    command: str | None,
) -> dict[str, Any]:
    rows: dict[str, list[EvalResult]] = {}
    for res_list in results.values():
        for res in res_list:
            for label, ev in res.rows.items():
                rows.setdefault(label, []).append(ev)
    constant = results.get("constant_tau")
    constant_tau = constant[0].extra.get("constant_tau") if constant else None
    tables = build_tables(rows, tasks, constant_tau)

    speed: dict[str, Any] = {}
    for name, res_list in results.items():
        for stage in ("sft", "offline", "online"):
            logs = [r.logs[stage] for r in res_list if stage in r.logs]
            if logs:
                speed[f"{name}/{stage}"] = {
                    "updates_per_s": mean_se([lg.updates_per_s for lg in logs]),
                    "first_update_s": logs[0].compile_s,  # first seed: includes jit compilation
                    "updates": logs[0].updates,
                }
    cycle: dict[str, Any] = {}
    long_tasks = [t for t in tasks if task_info(t).is_long_horizon]
    for label, evs in rows.items():
        cycle[label] = {
            t: {
                "cycle_time_s": mean_se([e.per_task[t].cycle_time_s for e in evs]),
                "mean_episode_s": mean_se([e.per_task[t].mean_length_s for e in evs]),
            }
            for t in tasks
        }
    online_rounds: dict[str, Any] = {}
    for name, res_list in results.items():
        logs = [r.logs["online"] for r in res_list if "online" in r.logs]
        rounds = [rd for lg in logs for rd in lg.rounds]
        if rounds:
            online_rounds[name] = {
                "rollout_s": mean_se([rd.rollout_s for rd in rounds]),
                "train_s": mean_se([rd.train_s for rd in rounds]),
                "round_s": mean_se([rd.rollout_s + rd.train_s for rd in rounds]),
                "episodes_per_round": mean_se([rd.episodes for rd in rounds]),
                "takeovers_per_episode": mean_se([rd.takeovers / max(rd.episodes, 1) for rd in rounds]),
                "intervention_step_fraction": mean_se([rd.intervention_steps / max(rd.env_steps, 1) for rd in rounds]),
                "online_success_rate": mean_se([rd.successes / max(rd.episodes, 1) for rd in rounds]),
                "publishes_per_round": mean_se([len(rd.published) for rd in rounds]),
            }
    critic: dict[str, Any] = {}
    for name, res_list in results.items():
        for stage in ("offline", "online"):
            probes = [r.extra[f"critic_{stage}"] for r in res_list if f"critic_{stage}" in r.extra]
            if probes:
                critic[f"{name}/{stage}"] = {k: mean_se([p[k] for p in probes]) for k in probes[0]}
    lwd = results.get("lwd", [])
    curves = [r.extra["curve"] for r in lwd if "curve" in r.extra]
    traces = next((r.extra["value_traces"] for r in lwd if "value_traces" in r.extra), {})
    per_seed = {
        name: [
            {
                "rows": {label: ev.to_dict() for label, ev in r.rows.items()},
                "logs": {stage: lg.to_dict() for stage, lg in r.logs.items()},
                "extra": {k: v for k, v in r.extra.items() if k not in ("value_traces",)},
            }
            for r in res_list
        ]
        for name, res_list in results.items()
    }
    return {
        "profile": prof.name,
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git": git_info(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()],
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "tasks": list(tasks),
        "seeds": prof.seeds,
        "config": json.loads(json.dumps(dataclasses.asdict(prof), default=str)),
        "data": data_info,
        "tables": tables["aggregate"],
        "markdown": tables["markdown"],
        "orderings": orderings(rows, tasks),
        "constant_tau": constant_tau,
        "speed": speed,
        "cycle_times": cycle,
        "long_horizon_tasks": long_tasks,
        "online_rounds": online_rounds,
        "critic": critic,
        "curve": curves,
        "value_traces": traces,
        "method_seconds": {k: round(v, 1) for k, v in method_seconds.items()},
        "skipped_methods": skipped,
        "per_seed": per_seed,
    }


def _jsonable(value: Any) -> Any:
    """Plain JSON: numpy scalars/arrays to Python, tuples to lists, NaN/inf to null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _write(out: Path, report: dict[str, Any], results: dict[str, list[MethodResult]]) -> None:
    figures = {}
    if report["curve"]:
        _plot_curve(report["curve"], out / "online_curve.png")
        figures["online improvement"] = "online_curve.png"
    if report["value_traces"]:
        _plot_values(report["value_traces"], out / "value_over_time.png")
        figures["value over time (Fig. 6)"] = "value_over_time.png"
    lwd = results.get("lwd", [])
    if lwd and "online" in lwd[0].logs:
        _plot_tau([lwd[0].logs["offline"], lwd[0].logs["online"]], out / "tau_entropy.png")
        figures["tau and entropy (Fig. 8)"] = "tau_entropy.png"
    report["figures"] = figures
    (out / "results.json").write_text(json.dumps(_jsonable(report), indent=1, allow_nan=False))
    (out / "results.md").write_text(render_markdown(report))


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable results page."""
    git = report["git"]
    md = report["markdown"]
    lines = [
        f"# Learning benchmark — profile `{report['profile']}`",
        "",
        f"- command: `{report['command']}`",
        f"- commit: `{git['commit']}`{' (with uncommitted changes)' if git.get('dirty') else ''}",
        f"- date: {report['timestamp']}; runtime {report['runtime_s']:.0f} s; {report['machine']['cpu_count']} CPUs",
        f"- tasks: {', '.join(report['tasks'])}; seeds: {report['seeds']}; values are mean ± standard error over seeds",
        f"- offline buffer: {report['data'].get('offline_buffer')}",
        f"- evaluation sampler (the online fleet's too): {_sampler_text(report['config'])}",
        f"- QAM temperature λ: {report['config'].get('qam_lam', 2.0):g}",
    ]
    if report.get("incomplete"):
        lines.append(f"- **incomplete run** (written after each method): {report['incomplete']}")
    if report["profile"] == "quick":
        lines.append(
            "- **quick is a CI smoke test** (tiny networks, a few dozen updates): its numbers do not "
            "measure the method."
        )
    if report["skipped_methods"]:
        lines.append(f"- skipped methods: {report['skipped_methods']}")
    lines += ["", "## Table I — success rate (grocery) / step-wise score (long-horizon)", "", md["table1"]]
    if "table2" in md:
        lines += ["", "## Table II — value learning: DIVL vs scalar expectile (group averages)", "", md["table2"]]
    if "table3" in md:
        lines += ["", "## Table III — adaptive vs constant τ (offline)", "", md["table3"]]
    lines += ["", "## Target orderings (issue #4, point 7)", ""]
    for chk in report["orderings"]:
        lines.append(
            f"- {'holds' if chk['holds'] else '**does not hold**'}: {chk['claim']} "
            f"({chk['left']:.3f} vs {chk['right']:.3f})"
        )
    lines += [
        "",
        "## Speed",
        "",
        _markdown_table(
            ["Method / stage", "updates/s (after the first)", "first update incl. compile, first seed [s]", "updates"],
            [
                [
                    k,
                    _fmt_cell(v["updates_per_s"], 1),
                    f"{v['first_update_s']:.1f}",
                    str(v["updates"]),
                ]
                for k, v in report["speed"].items()
            ],
        ),
    ]
    if report["online_rounds"]:
        lines += [
            "",
            "## Online rounds (per round)",
            "",
            _stats_table(
                "Method",
                [
                    ("rollout [s]", "rollout_s", 1),
                    ("train [s]", "train_s", 1),
                    ("round [s]", "round_s", 1),
                    ("episodes", "episodes_per_round", 1),
                    ("takeovers/episode", "takeovers_per_episode", 2),
                    ("intervention steps", "intervention_step_fraction", 2),
                    ("online success", "online_success_rate", 2),
                    ("publishes", "publishes_per_round", 1),
                ],
                report["online_rounds"],
            ),
        ]
    if report.get("critic"):
        lines += [
            "",
            "## Critic: does Q rank actions? (fixed offline batch per seed; `lwd_learner.critic_diagnostics`)",
            "",
            "QAM follows grad_a Q. Q(s, a) - Q(s, a') with a' another row's recorded chunk is ~0, and its share",
            "of positive rows ~0.5, for a critic whose action dependence is noise; the correlation with the",
            "Monte-Carlo return-to-go measures how it ranks states.",
            "",
            _stats_table(
                "Method / stage",
                [
                    ("Q - Q(shuffled chunk)", "action_gap", 4),
                    ("share > 0", "gap_fraction", 2),
                    ("Q - Q(a + 0.3 std)", "perturbed_gap", 4),
                    ("‖∇_a Q‖", "grad_norm", 4),
                    ("Q mean", "q_mean", 2),
                    ("return mean", "return_mean", 2),
                    ("corr(Q, return)", "return_corr", 2),
                ],
                report["critic"],
            ),
        ]
    long_tasks = report["long_horizon_tasks"]
    if long_tasks:
        lines += [
            "",
            "## Cycle time of successful long-horizon episodes [s] (cf. Fig. 5)",
            "",
            _markdown_table(
                ["Method", *[task_info(t).title for t in long_tasks]],
                [
                    [label, *[_fmt_cell(ct[t]["cycle_time_s"], 1) for t in long_tasks]]
                    for label, ct in report["cycle_times"].items()
                ],
            ),
        ]
    if report["figures"]:
        lines += ["", "## Figures", ""]
        lines += [f"- {name}: ![{name}]({path})" for name, path in report["figures"].items()]
    lines.append("")
    return "\n".join(lines)


def _stats_table(first: str, columns: Sequence[tuple[str, str, int]], stats: dict[str, dict[str, Any]]) -> str:
    """Markdown table of ``(mean, se, n)`` cells: one row per ``stats`` key, ``columns`` = (title, key, digits)."""
    return _markdown_table(
        [first, *[title for title, _, _ in columns]],
        [[row, *[_fmt_cell(v[key], digits) for _, key, digits in columns]] for row, v in stats.items()],
    )


def _fmt_cell(stat: Sequence[float], digits: int = 2) -> str:
    mean, se, n = stat
    if not n:
        return "–"
    return f"{mean:.{digits}f}" if n < 2 or not np.isfinite(se) else f"{mean:.{digits}f} ± {se:.{digits}f}"


# ----------------------------------------------------------------------------- command line


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the profile's)")
    parser.add_argument("--methods", nargs="+", default=None, help=f"subset, in order, of {list(METHODS)}")
    parser.add_argument("--tasks", nargs="+", default=None, help="subset of the implemented tasks")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default learner/bench/results/...)")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep/reuse the generated offline MCAP files here")
    parser.add_argument(
        "--episodes-per-task", type=int, default=None, help="offline episodes per task (default: the profile's)"
    )
    parser.add_argument(
        "--eval-execute-steps", type=int, default=None, help="evaluation: chunk ticks executed before replanning"
    )
    parser.add_argument("--eval-noise-scale", type=float, default=None, help="evaluation: flow noise scale (0-1)")
    parser.add_argument("--sft-updates", type=int, default=None, help="SFT updates per seed (default: the profile's)")
    parser.add_argument("--qam-lam", type=float, default=None, help="QAM temperature lambda (default: the profile's)")


def _sampler_text(config: dict[str, Any]) -> str:
    execute = config.get("eval_execute_steps")
    noise = config.get("eval_noise_scale", 1.0)
    replan = f"replan every {execute} ticks" if execute else "each chunk executed whole"
    return f"{replan}, flow noise scale {noise:g}" + (" (deterministic)" if noise == 0 else "")


def _run_args(args: argparse.Namespace, command: str | None = None) -> int:
    if command is None and "lwd" in Path(sys.argv[0]).name:
        command = " ".join(["lwd bench learning", *sys.argv[1:]])
    run(
        args.profile,
        args.out,
        args.seeds,
        args.methods,
        args.tasks,
        args.data_dir,
        command=command,
        episodes_per_task=args.episodes_per_task,
        eval_execute_steps=args.eval_execute_steps,
        eval_noise_scale=args.eval_noise_scale,
        sft_updates=args.sft_updates,
        qam_lam=args.qam_lam,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``learning`` subcommand (``lwd bench learning ...``) to a subparsers object."""
    parser = subparsers.add_parser("learning", help="reproduce the paper's Tables I-III on the sim suite")
    _add_arguments(parser)
    parser.set_defaults(func=_run_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m lwd_learner.bench_learning [learning] --profile ...`` (a leading ``learning`` is
    accepted so ``lwd bench ...`` can hand its arguments straight through)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    via_lwd = bool(argv) and argv[0] == "learning"
    if via_lwd:
        argv = argv[1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    prefix = "lwd bench learning" if via_lwd else "python -m lwd_learner.bench_learning"
    return _run_args(args, " ".join([prefix, *argv]))


if __name__ == "__main__":
    raise SystemExit(main())
