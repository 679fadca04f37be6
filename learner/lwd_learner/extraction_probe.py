"""Policy-extraction probe: can QAM improve an imperfect reference on one task? (issue 4, point 7)

    python -m lwd_learner.extraction_probe --task restocking --sft-updates 1500 \
        --rollouts 192 --rollout-noise 0.3 --lams 2 0.01 0.003 [--data-dir DIR] [--out DIR]

LWD's offline stage beats its reference only if the critic's ``grad_a Q`` points at better chunks.
The learning bench mixes that question with eight tasks, three stages and five baselines; this probe
isolates it on one task, for one reference and several QAM temperatures:

1. the offline buffer: the generator's episodes of the task (``--data-dir`` reuses kept MCAPs, as the
   learning bench does);
2. a deliberately imperfect reference: flow-matching SFT on the task's demos for ``--sft-updates``
   (``--reference-data all``: on the whole buffer, so the reference also imitates the rollouts' and
   play's mistakes, and its own support holds both the chunks that succeed and those that fail);
3. optionally, ``--rollouts`` episodes of that reference run without rescue at flow noise
   ``--rollout-noise`` (the paper's "rollouts of historical policies", Sec. IV-C), added to the buffer:
   the same scenes sometimes succeed and sometimes fail, which is what gives a critic action contrast;
   with ``--rollout-perturb-p`` each chunk query is, with that probability per robot, replaced by the
   reference's chunk plus a smooth offset of ``--rollout-perturb-scale`` normalised standard deviations
   (one strongly perturbed chunk now and then, the rest the reference's), so that a single chunk's
   effect on the outcome is large enough for a critic to see;
4. per lambda: offline DIVL + QAM from the reference, then the critic diagnostics
   (:mod:`lwd_learner.critic_diagnostics`) on the rollout rows (the offline rows without rollouts),
   how far the policy moved (rms of policy minus reference chunks from the same noise, normalised
   units) and the closed-loop number on ``--eval-scenes`` evaluation scenes;
5. optionally (``--select-n``), the same critic without any policy update: best-of-N reference chunks
   by Q (:mod:`lwd_learner.q_selection`) against a random pick among the same N candidates, on the
   same evaluation scenes. It separates "the critic cannot rank the reference's chunks" from "QAM
   does not turn the ranking into a policy"; with ``--mc-critic-updates`` the same check also runs
   with a critic regressed on Monte-Carlo returns of the critic's rows (:mod:`lwd_learner.mc_critic`:
   no TD), which separates "TD does not carry a chunk's effect back" from "the data cannot show it",
   and QAM is also run against that critic alone (:func:`lwd_learner.stages.run_extraction`), which
   asks whether QAM turns a critic that does rank chunks into a better policy;
6. optionally (``--branch-scenes``), same-state branches (:mod:`lwd_learner.branching`): per scene,
   ``--branch-width`` lockstep copies of the deterministic reference, all but one executing a perturbed
   chunk at one replan. All but the last ``--branch-held-out`` of the scenes join the offline buffer
   and the critic's rows; each critic (DIVL, and the Monte-Carlo one when fitted) is scored on ranking
   the successful copies above the failed ones from the state where they split, on the scenes it
   trained on and on the held-out ones: the data that rollouts cannot give, and whether what a critic
   learns from it carries to states it has not seen.

The critic does not depend on lambda (DIVL trains it on replay actions only), so every lambda shares
one critic measurement. Writes ``<out>/<task>.json`` and rewrites ``<out>/README.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lwd_learner.agent import LWDAgent
from lwd_learner.branching import BranchConfig, branch_ranking, run_branches, split_groups, split_rows
from lwd_learner.config import LearnerConfig, PolicyConfig
from lwd_learner.critic_diagnostics import agent_q_fn, critic_diagnostics, smooth_offsets
from lwd_learner.dataset import EpisodeArrays, Normalizer, compute_normalizer
from lwd_learner.evaluate import EvalConfig, evaluate
from lwd_learner.mc_critic import fit_mc_critic
from lwd_learner.provenance import git_info, write_probe_result
from lwd_learner.q_selection import CANDIDATES, best_of_n_policy, random_pick_policy
from lwd_learner.replay import ReplayBuffer
from lwd_learner.rollout import EpisodeSpec, RolloutConfig, SimFleet, agent_policy
from lwd_learner.stages import OfflineConfig, SFTConfig, run_extraction, run_offline, run_sft
from lwd_protocol.episode import EpisodeSource
from lwd_protocol.robot_spec import CHUNK_HORIZON
from lwd_protocol.tasks import TASK_NAMES, task_info

RESULTS_DIR = Path(__file__).resolve().parents[1] / "bench" / "results" / "extraction_probe"
ROLLOUT_SEED_BASE = 700_000  # the reference's rollouts (disjoint from generator, online and eval seeds)
DIAGNOSTIC_ROWS = 2048
REFERENCE_DATA = ("demos", "all")


@dataclass(frozen=True)
class ExtractionProbeConfig:
    task: str
    profile: str = "cpu"  # learning-bench profile whose network and flow steps are used
    episodes_per_task: int = 400  # offline buffer (generated unless data_dir holds episodes)
    data_dir: Path | None = None
    sft_updates: int = 1500
    reference_data: str = "demos"  # "demos" (the paper's SFT) or "all" (BC on the whole offline buffer)
    sft_lr: float = 1e-3
    offline_updates: int = 2000
    batch_size: int = 128
    lams: tuple[float, ...] = (2.0, 0.01, 0.003)
    rollouts: int = 0
    rollout_noise: float = 0.3
    rollout_perturb_p: float = 0.0  # per chunk query and robot: execute a perturbed chunk
    rollout_perturb_scale: float = 0.5  # its offset, normalised action units (critic_diagnostics' smooth shape)
    eval_scenes: int = 32
    execute_steps: int = 10  # the sampler of evaluation and rollouts: ticks per chunk before replanning
    eval_noise: float = 0.0
    envs: int = 16
    seed: int = 0
    select_n: tuple[int, ...] = ()  # best-of-N by Q check (step 5); empty = skip
    select_noise: float = 1.0  # flow-noise scale of candidates 1..N-1 (candidate 0: the evaluation noise)
    select_candidates: str = "flow"  # or "offset": candidate 0 plus smooth offsets of select_noise
    mc_critic_updates: int = 0  # > 0: also fit a Monte-Carlo critic and run best-of-max(select_n) with it
    branch_scenes: int = 0  # step 6: scenes of same-state branches added to the buffer; 0 = none
    branch_width: int = 8
    branch_scale: float = 1.0
    branch_held_out: float = 0.25  # fraction of branch scenes no critic trains on (ranked separately)

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES:
            raise ValueError(f"unknown task {self.task!r}; known: {', '.join(TASK_NAMES)}")
        if min(self.sft_updates, self.offline_updates, self.eval_scenes, self.episodes_per_task, self.envs) < 1:
            raise ValueError("sft_updates, offline_updates, eval_scenes, episodes_per_task and envs must be >= 1")
        if self.reference_data not in REFERENCE_DATA:
            raise ValueError(f"reference_data must be one of {REFERENCE_DATA}, got {self.reference_data!r}")
        if not self.lams or any(not lam > 0 for lam in self.lams):
            raise ValueError(f"lams must be non-empty and > 0, got {self.lams}")
        if self.rollouts < 0 or self.rollout_noise < 0 or self.eval_noise < 0 or self.select_noise < 0:
            raise ValueError("rollouts, rollout_noise, eval_noise and select_noise must be >= 0")
        if not 0.0 <= self.rollout_perturb_p <= 1.0 or self.rollout_perturb_scale < 0:
            raise ValueError(
                f"rollout_perturb_p must be in [0, 1] and rollout_perturb_scale >= 0, "
                f"got {self.rollout_perturb_p}, {self.rollout_perturb_scale}"
            )
        if self.mc_critic_updates < 0 or (self.mc_critic_updates and not self.select_n):
            raise ValueError("mc_critic_updates must be >= 0 and needs select_n (its best-of-N check)")
        if self.branch_scenes < 0:
            raise ValueError(f"branch_scenes must be >= 0, got {self.branch_scenes}")
        if not 0.0 <= self.branch_held_out < 1.0:
            raise ValueError(f"branch_held_out must be in [0, 1), got {self.branch_held_out}")
        if self.branch_scenes:
            self.branch_config()  # validates width and scale
        if self.select_candidates not in CANDIDATES:
            raise ValueError(f"select_candidates must be one of {CANDIDATES}, got {self.select_candidates!r}")
        if any(n < 2 for n in self.select_n):
            raise ValueError(f"select_n values must be >= 2 (N = 1 is the reference), got {self.select_n}")

    def branch_config(self) -> BranchConfig:
        return BranchConfig(self.branch_scenes, self.branch_width, self.branch_scale, seed=self.seed)


def learner_config(config: ExtractionProbeConfig, normalizer: Normalizer, lam: float, updates: int) -> LearnerConfig:
    """The offline-stage LearnerConfig at the bench profile's sizes, QAM temperature ``lam``."""
    from lwd_learner.bench_learning import PROFILES

    prof = PROFILES[config.profile]
    base = LearnerConfig.offline()
    network = dataclasses.replace(
        prof.network, obs_dim=normalizer.obs_dim, action_dim=normalizer.action_dim, horizon=CHUNK_HORIZON
    )
    return dataclasses.replace(
        base,
        network=network,
        policy=PolicyConfig(flow_steps=prof.flow_steps, qam_loss_steps=prof.qam_loss_steps, lam=lam),
        optim=dataclasses.replace(base.optim, sft_lr=config.sft_lr, decay_steps=updates),
    )


def policy_shift(agent: LWDAgent, policy_params, reference_params, obs: jax.Array, key: jax.Array) -> dict:
    """Rms of policy minus reference chunks from the same noise (zero noise and N(0, I)), normalised units."""
    shape = (obs.shape[0], agent.config.network.horizon, agent.config.network.action_dim)
    out = {}
    for name, noise in (("zero_noise", jnp.zeros(shape)), ("unit_noise", jax.random.normal(key, shape))):
        diff = agent.sample_actions(policy_params, obs, noise) - agent.sample_actions(reference_params, obs, noise)
        out[name] = float(jnp.sqrt(jnp.mean(jnp.square(diff))))
    return out


class PerturbedChunks:
    """Wraps a PolicyFn: each row's chunk gets, with probability ``p``, a smooth offset of ``scale``
    (normalised units); counts the queries and the perturbed chunks for the results."""

    def __init__(self, policy, p: float, scale: float, seed: int) -> None:
        self.policy, self.p, self.scale = policy, p, scale
        self.rng = np.random.default_rng(seed)
        self.chunks = self.perturbed = 0

    def __call__(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        chunk = np.asarray(self.policy(obs, noise))
        hit = self.rng.random(chunk.shape[0]) < self.p
        self.chunks += chunk.shape[0]
        self.perturbed += int(hit.sum())
        if not hit.any():
            return chunk
        delta = smooth_offsets(self.rng, chunk.shape, self.scale).astype(chunk.dtype)
        return chunk + hit[:, None, None] * delta


def _score(result, task: str) -> dict:
    te = result.per_task[task]
    return {"value": float(te.value), "success_rate": float(te.success_rate), "episodes": int(te.episodes)}


def _rollout_summary(results) -> dict:
    return {
        "episodes": len(results),
        "success_rate": float(np.mean([r.success for r in results])),
        "mean_score": float(np.mean([r.score for r in results])),
        "subtasks_done": [int(r.episode.subtasks_done) for r in results],
    }


def _critic_rows(rollouts: list, branches: list) -> str:
    parts = [name for name, eps in (("reference rollouts", rollouts), ("branches", branches)) if eps]
    return " + ".join(parts) or "offline buffer"


def _branch_summary(config: ExtractionProbeConfig, groups, held_out: int) -> dict:
    return {
        "scenes": len(groups),
        "held_out_scenes": held_out,
        "width": config.branch_width,
        "scale": config.branch_scale,
        "mixed_groups": sum(g.mixed for g in groups),
        "identical_split_states": sum(g.state_spread == 0.0 for g in groups),
        "unperturbed_success": float(np.mean([g.success[0] for g in groups])),
        "branched_success": float(np.mean([s for g in groups for s in g.success[1:]])),
        "groups": [dataclasses.asdict(g) for g in groups],
    }


def _selection_check(config: ExtractionProbeConfig, agent, reference, critic_params, score_of, say) -> dict:
    """Step 5: best-of-N by Q for each N, and a random pick among max(N) candidates as the control."""
    control_n = max(config.select_n)
    kind = config.select_candidates
    control = random_pick_policy(agent, reference, control_n, config.select_noise, config.seed, kind)
    random_pick = score_of(control)
    say(f"  random pick of {control_n} at noise {config.select_noise:g}: {random_pick['value']:.3f}")
    best = []
    for n in config.select_n:
        policy = best_of_n_policy(agent, reference, critic_params, n, config.select_noise, config.seed, kind)
        score = score_of(policy)
        best.append({"n": n, "eval": score})
        say(f"  best of {n} by Q: {score['value']:.3f}")
    return {
        "noise": config.select_noise,
        "candidates": kind,
        "random_pick": {"n": control_n, "eval": random_pick},
        "best_of_n": best,
    }


def _mc_critic_check(config, agent, reference, rows, offline, diag_rows, score_of, keys, rank, say) -> dict:
    """Step 5's Monte-Carlo variant: fit a critic on the rows' returns, diagnose it, best-of-max(N) with it,
    ``rank`` it on the branches (when there are any), and extract a policy from it by QAM alone
    (``agent``'s lambda, ``offline_updates`` steps on the offline buffer's states)."""
    params, loss = fit_mc_critic(
        agent, rows.sample, config.mc_critic_updates, config.batch_size, keys[2], seed=config.seed
    )
    n = max(config.select_n)
    policy = best_of_n_policy(agent, reference, params, n, config.select_noise, config.seed, config.select_candidates)
    score = score_of(policy)
    say(f"  Monte-Carlo critic ({config.mc_critic_updates} updates): best of {n} by Q: {score['value']:.3f}")
    q_fn = agent_q_fn(agent, params)
    state = agent.start_rl(agent.init(keys[2]).replace(reference_params=reference))
    extract_cfg = OfflineConfig(
        num_updates=config.offline_updates, batch_size=config.batch_size, log_every=config.offline_updates
    )
    state, _ = run_extraction(agent, state, params, offline, extract_cfg, keys[3])
    qam_score = score_of(agent_policy(agent, state.policy_params))
    shift = policy_shift(agent, state.policy_params, reference, diag_rows[0][:256], keys[2])
    say(f"  QAM against the Monte-Carlo critic, lambda {agent.config.policy.lam:g}: {qam_score['value']:.3f}")
    return {
        "updates": config.mc_critic_updates,
        "final_loss": loss,
        "critic": critic_diagnostics(q_fn, *diag_rows, keys[3]),
        "best_of_n": {"n": n, "eval": score},
        "branch_ranking": rank(q_fn),
        "qam": {"lam": agent.config.policy.lam, "eval": qam_score, "shift": shift},
    }


def run_probe(config: ExtractionProbeConfig, say=print) -> dict:
    """Steps 1-5 of the module docstring; returns the results dict."""
    from lwd_learner.bench_learning import offline_data

    t_start = time.perf_counter()
    episodes, data_info = offline_data((config.task,), config.episodes_per_task, 0, config.data_dir)
    if not any(e.source is EpisodeSource.DEMO for e in episodes):
        raise RuntimeError(f"the offline buffer holds no demonstration of {config.task}")
    normalizer = compute_normalizer(episodes)
    gamma = LearnerConfig().value.gamma
    keys = jax.random.split(jax.random.key(config.seed), 4)

    sft_agent = LWDAgent(learner_config(config, normalizer, config.lams[0], config.sft_updates))
    demos = ReplayBuffer(normalizer, CHUNK_HORIZON, gamma)
    demos.add_episodes([e for e in episodes if config.reference_data == "all" or e.source is EpisodeSource.DEMO])
    sft = SFTConfig(num_updates=config.sft_updates, batch_size=config.batch_size, log_every=config.sft_updates)
    state, _ = run_sft(sft_agent, sft_agent.init(keys[0]), demos, sft, keys[1])
    reference = state.reference_params

    eval_cfg = EvalConfig(
        episodes_per_task=config.eval_scenes,
        tasks=(config.task,),
        execute_steps=config.execute_steps,
        noise_scale=config.eval_noise,
    )
    fleet = SimFleet((config.task,), config.envs, None)

    def score_of(policy) -> dict:
        return _score(evaluate(fleet, policy, normalizer, eval_cfg), config.task)

    try:
        ref_eval = score_of(agent_policy(sft_agent, reference))
        say(f"[extraction_probe {config.task}] reference ({config.sft_updates} SFT updates): {ref_eval['value']:.3f}")
        rollouts: list[EpisodeArrays] = []
        rollout_info = None
        if config.rollouts:
            specs = [EpisodeSpec(config.task, ROLLOUT_SEED_BASE + i) for i in range(config.rollouts)]
            sampler = RolloutConfig(execute_steps=config.execute_steps, noise_scale=config.rollout_noise)
            behaviour = PerturbedChunks(
                agent_policy(sft_agent, reference), config.rollout_perturb_p, config.rollout_perturb_scale, config.seed
            )
            results, _ = fleet.run(behaviour, normalizer, specs, np.random.default_rng(config.seed), sampler)
            rollouts = [r.episode for r in results]
            rollout_info = _rollout_summary(results)
            rollout_info.update(chunk_queries=behaviour.chunks, perturbed_chunks=behaviour.perturbed)
            say(
                f"  {config.rollouts} reference rollouts at noise {config.rollout_noise}: "
                f"success {rollout_info['success_rate']:.3f}"
            )
        branches, groups, held_out = [], [], ([], [])
        if config.branch_scenes:
            branch_policy = agent_policy(sft_agent, reference)
            all_branches, all_groups = run_branches(
                config.task, branch_policy, normalizer, config.branch_config(), config.execute_steps, say
            )
            (branches, groups), held_out = split_groups(all_branches, all_groups, config.branch_held_out)
        offline = ReplayBuffer(normalizer, CHUNK_HORIZON, gamma)
        offline.add_episodes(episodes + rollouts + branches)
        rows = ReplayBuffer(normalizer, CHUNK_HORIZON, gamma)
        rows.add_episodes((rollouts + branches) or episodes)

        ranking_rows = {
            name: split_rows(normalizer, eps, grps, gamma, CHUNK_HORIZON)
            for name, (eps, grps) in (("train", (branches, groups)), ("held_out", held_out))
            if grps
        }

        def rank(q_fn) -> dict | None:
            """The critic's within-group ranking on the branch scenes it trained on and on the held-out ones."""
            if not ranking_rows:
                return None
            return {
                name: branch_ranking(q_fn, ranking_rows[name]) if name in ranking_rows else None
                for name in ("train", "held_out")
            }

        batch = rows.sample(np.random.default_rng([config.seed, 7919]), DIAGNOSTIC_ROWS)
        obs, actions = jnp.asarray(batch["obs"]), jnp.asarray(batch["actions"])

        runs, critic, selection, mc_critic = [], None, None, None
        for lam in config.lams:
            agent = LWDAgent(learner_config(config, normalizer, lam, config.offline_updates))
            rl_state = agent.start_rl(agent.init(keys[2]).replace(reference_params=reference))
            off_cfg = OfflineConfig(
                num_updates=config.offline_updates, batch_size=config.batch_size, log_every=config.offline_updates
            )
            rl_state, off_log = run_offline(agent, rl_state, offline, off_cfg, keys[3])
            if critic is None:
                q_fn = agent_q_fn(agent, rl_state.critic_params)
                critic = critic_diagnostics(q_fn, obs, actions, batch["return_to_go"], keys[3])
                critic["branch_ranking"] = rank(q_fn)
                if config.select_n:
                    selection = _selection_check(config, agent, reference, rl_state.critic_params, score_of, say)
                if config.mc_critic_updates:
                    diag_rows = (obs, actions, batch["return_to_go"])
                    mc_critic = _mc_critic_check(
                        config, agent, reference, rows, offline, diag_rows, score_of, keys, rank, say
                    )
            policy = agent_policy(agent, rl_state.policy_params)
            score = score_of(policy)
            shift = policy_shift(agent, rl_state.policy_params, reference, obs[:256], keys[2])
            runs.append({"lam": lam, "eval": score, "shift": shift, "updates_per_s": off_log.updates_per_s})
            say(f"  lambda {lam:g}: {score['value']:.3f} (shift {shift['zero_noise']:.4f})")
    finally:
        fleet.close()
    return {
        "task": config.task,
        "metric": "score" if task_info(config.task).is_long_horizon else "success",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()},
        "command": " ".join(["python -m lwd_learner.extraction_probe", *sys.argv[1:]]),
        "git": git_info(),
        "data": data_info,
        "reference": ref_eval,
        "rollouts": rollout_info,
        "critic_rows": _critic_rows(rollouts, branches),
        "branches": _branch_summary(config, groups + held_out[1], len(held_out[1])) if config.branch_scenes else None,
        "critic": critic,
        "selection": selection,
        "mc_critic": mc_critic,
        "runs": runs,
        "runtime_s": round(time.perf_counter() - t_start, 1),
    }


def _branch_text(result: dict) -> str:
    """``scenes x width, scale: mixed groups / DIVL agreement (MC agreement)``, or ``-``."""
    br = result.get("branches")
    if not br:
        return "-"

    def agreement(ranking: dict | None) -> str:
        """``train`` agreement, then ``held-out`` when the run held scenes out."""
        ranking = ranking or {}
        values = [(ranking.get(part) or {}).get("agreement") for part in ("train", "held_out")]
        return " / ".join("-" if v is None else f"{v:.2f}" for v in values)

    mc = result.get("mc_critic") or {}
    text = f"{br['scenes']} x {br['width']} at {br['scale']:g} ({br.get('held_out_scenes', 0)} held out): "
    text += f"{br['mixed_groups']} mixed; " + agreement(result["critic"].get("branch_ranking"))
    if mc.get("branch_ranking"):
        text += f" (MC {agreement(mc['branch_ranking'])})"
    return text


def summary_markdown(folder: Path) -> str:
    """One row per ``<name>.json`` in ``folder``: reference, rollouts, critic and each lambda's score."""
    lines = [
        "QAM from an imperfect reference (`python -m lwd_learner.extraction_probe`): evaluation scenes, success rate "
        "(grocery) or step-wise score (long-horizon); shift = rms policy - reference chunk from zero noise.",
        "",
        "| run | reference | rollouts (success) | critic rows: gap / share > 0 / corr(Q, return) "
        "| lambda: score (shift) | best-of-N by Q (random pick) "
        "| branches: mixed groups; P(Q win) train / held-out, DIVL (MC) | commit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        roll = r["rollouts"]
        noise = r["config"]["rollout_noise"]
        roll_text = f"{roll['episodes']} at noise {noise:g} ({roll['success_rate']:.2f})" if roll else "-"
        if roll and roll.get("perturbed_chunks"):
            share = roll["perturbed_chunks"] / max(roll["chunk_queries"], 1)
            roll_text += f", {share:.1%} of chunks perturbed by {r['config']['rollout_perturb_scale']:g}"
        c = r["critic"]
        rows = f"{r['critic_rows']} ({r['config']['offline_updates']} updates)"
        critic = f"{rows}: {c['action_gap']:.4f} / {c['gap_fraction']:.2f} / {c['return_corr']:.2f}"
        lams = ", ".join(f"{x['lam']:g}: {x['eval']['value']:.2f} ({x['shift']['zero_noise']:.3f})" for x in r["runs"])
        on_all = " on all data" if r["config"].get("reference_data") == "all" else ""
        eval_noise = r["config"].get("eval_noise", 0.0)
        updates = r["config"]["sft_updates"]
        ref = f"{r['reference']['value']:.2f} ({updates} SFT updates{on_all}; eval noise {eval_noise:g})"
        sel = r.get("selection")
        sel_text = "-"
        if sel:
            best = ", ".join(f"N={b['n']}: {b['eval']['value']:.2f}" for b in sel["best_of_n"])
            pick = sel["random_pick"]
            kind = "offset" if sel.get("candidates") == "offset" else "noise"
            sel_text = f"{best} (N={pick['n']}: {pick['eval']['value']:.2f}; {kind} {sel['noise']:g})"
        mc = r.get("mc_critic")
        if mc:
            gap, best_mc = mc["critic"]["action_gap"], mc["best_of_n"]
            sel_text += f"; MC critic ({mc['updates']} updates, gap {gap:.4f}): "
            sel_text += f"N={best_mc['n']}: {best_mc['eval']['value']:.2f}"
            if mc.get("qam"):
                sel_text += f", QAM {mc['qam']['lam']:g}: {mc['qam']['eval']['value']:.2f}"
        commit = r["git"]["commit"][:8]
        cells = [path.stem, ref, roll_text, critic, lams, sel_text, _branch_text(r), commit]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + seed_group_lines(folder)) + "\n"


SEED_SUFFIX = re.compile(r"^(?P<group>.+)-seed(?P<seed>\d+)$")


def _mean_se(values: list[float], signed: bool = False) -> str:
    x = np.asarray(values, np.float64)
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
    return f"{x.mean():{'+' if signed else ''}.3f} ± {se:.3f}"


def _minus(scores: list[float], reference: list[float]) -> str:
    return _mean_se([x - y for x, y in zip(scores, reference, strict=True)], signed=True)


def seed_group_lines(folder: Path) -> list[str]:
    """Runs named ``<group>-seed<k>`` (two or more): mean ± standard error over seeds, and each extraction's
    difference from its own seed's reference (same evaluation scenes), the paired number that says
    whether QAM moved the policy above the imitation it started from."""
    groups: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*.json")):
        match = SEED_SUFFIX.match(path.stem)
        if match:
            groups.setdefault(match["group"], []).append(json.loads(path.read_text()))
    groups = {name: runs for name, runs in groups.items() if len(runs) > 1}
    if not groups:
        return []
    lines = [
        "",
        'Seed groups (`<run>-seed<k>`): mean ± standard error over seeds; "- ref" = minus the same seed\'s reference.',
        "",
        "| group | seeds | reference | QAM (DIVL critic) per lambda: score; - ref | QAM (MC critic): score; - ref "
        "| best-of-N by Q (random pick) |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in groups.items():
        ref = [r["reference"]["value"] for r in runs]
        lam_cells = []
        for i, run in enumerate(runs[0]["runs"]):
            scores = [r["runs"][i]["eval"]["value"] for r in runs]
            lam_cells.append(f"{run['lam']:g}: {_mean_se(scores)}; {_minus(scores, ref)}")
        mc_cell = "-"
        if all((r.get("mc_critic") or {}).get("qam") for r in runs):
            scores = [r["mc_critic"]["qam"]["eval"]["value"] for r in runs]
            mc_cell = f"{_mean_se(scores)}; {_minus(scores, ref)}"
        sel_cell = "-"
        if all(r.get("selection") for r in runs):
            best = [r["selection"]["best_of_n"][0]["eval"]["value"] for r in runs]
            pick = [r["selection"]["random_pick"]["eval"]["value"] for r in runs]
            sel_cell = f"{_mean_se(best)} ({_mean_se(pick)})"
        seeds = ", ".join(str(r["config"]["seed"]) for r in runs)
        lines.append(f"| {name} | {seeds} | {_mean_se(ref)} | {' / '.join(lam_cells)} | {mc_cell} | {sel_cell} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ExtractionProbeConfig
    p.add_argument("--task", choices=TASK_NAMES, required=True)
    p.add_argument("--profile", default=d.profile, help="learning-bench profile for the network sizes")
    p.add_argument("--episodes-per-task", type=int, default=d.episodes_per_task)
    p.add_argument("--data-dir", type=Path, default=None, help="reuse (or keep) the generated offline MCAPs")
    p.add_argument("--sft-updates", type=int, default=d.sft_updates)
    p.add_argument("--reference-data", choices=REFERENCE_DATA, default=d.reference_data)
    p.add_argument("--offline-updates", type=int, default=d.offline_updates)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lams", type=float, nargs="+", default=list(d.lams))
    p.add_argument("--rollouts", type=int, default=d.rollouts)
    p.add_argument("--rollout-noise", type=float, default=d.rollout_noise)
    p.add_argument("--rollout-perturb-p", type=float, default=d.rollout_perturb_p)
    p.add_argument("--rollout-perturb-scale", type=float, default=d.rollout_perturb_scale)
    p.add_argument("--eval-scenes", type=int, default=d.eval_scenes)
    p.add_argument("--eval-noise", type=float, default=d.eval_noise, help="evaluation flow noise (0 = deterministic)")
    p.add_argument("--envs", type=int, default=d.envs)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--select-n", type=int, nargs="*", default=list(d.select_n), help="best-of-N by Q check")
    p.add_argument("--select-noise", type=float, default=d.select_noise)
    p.add_argument("--select-candidates", choices=CANDIDATES, default=d.select_candidates)
    p.add_argument("--mc-critic-updates", type=int, default=d.mc_critic_updates, help="Monte-Carlo critic check")
    p.add_argument("--branch-scenes", type=int, default=d.branch_scenes, help="same-state branch check")
    p.add_argument("--branch-width", type=int, default=d.branch_width)
    p.add_argument("--branch-scale", type=float, default=d.branch_scale)
    p.add_argument("--branch-held-out", type=float, default=d.branch_held_out)
    p.add_argument("--name", default=None, help="results file stem (default: the task)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    a = p.parse_args(argv)
    config = ExtractionProbeConfig(
        task=a.task,
        profile=a.profile,
        episodes_per_task=a.episodes_per_task,
        data_dir=a.data_dir,
        sft_updates=a.sft_updates,
        reference_data=a.reference_data,
        offline_updates=a.offline_updates,
        batch_size=a.batch_size,
        lams=tuple(a.lams),
        rollouts=a.rollouts,
        rollout_noise=a.rollout_noise,
        rollout_perturb_p=a.rollout_perturb_p,
        rollout_perturb_scale=a.rollout_perturb_scale,
        eval_scenes=a.eval_scenes,
        eval_noise=a.eval_noise,
        envs=a.envs,
        seed=a.seed,
        select_n=tuple(a.select_n),
        select_noise=a.select_noise,
        select_candidates=a.select_candidates,
        mc_critic_updates=a.mc_critic_updates,
        branch_scenes=a.branch_scenes,
        branch_width=a.branch_width,
        branch_scale=a.branch_scale,
        branch_held_out=a.branch_held_out,
    )
    write_probe_result(a.out, a.name or config.task, run_probe(config), summary_markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
