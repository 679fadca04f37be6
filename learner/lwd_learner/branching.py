"""Same-state branches: several chunks executed from one identical state, and their outcomes.

A critic learns what an action chunk does only where the data shows different chunks, with different
outcomes, from the same (or nearly the same) state. Rollouts of one reference visit each state once,
so in them the return is a function of the state and no critic can rank the reference's chunks
(issue 4, session 12). A simulator can do what a fleet does by repetition: run ``width`` copies of one
scene in lockstep under the deterministic reference, and at one replan let copies ``1..width-1``
execute the reference's chunk plus a smooth offset while copy 0 executes it unchanged. Each scene
then yields a group of episodes that share their history up to that tick and differ only in one
chunk, and the group's outcomes say which chunks worked.

This is a diagnostic for the learning benchmark's extraction probe (a real robot cannot be reset to
an identical state), and a positive control: :func:`branch_ranking` measures, on the rows
:func:`split_rows` collects, whether a critic ranks the successful branch above the failed one from
the very state where they split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lwd_learner.critic_diagnostics import smooth_offsets
from lwd_learner.dataset import EpisodeArrays, Normalizer
from lwd_learner.replay import ReplayBuffer
from lwd_learner.rollout import EpisodeSpec, PolicyFn, RolloutConfig, SimFleet

BRANCH_SEED_BASE = 800_000  # scene seeds of the branches (disjoint from generator, rollout and eval seeds)


@dataclass(frozen=True)
class BranchConfig:
    scenes: int  # scene seeds BRANCH_SEED_BASE + 0 .. scenes - 1, one group of episodes each
    width: int = 8  # episodes per scene: copy 0 unperturbed, 1..width-1 branched
    scale: float = 1.0  # the offset's size, normalised action units (critic_diagnostics' smooth shape)
    first_query: int = 2  # the branching replan is drawn uniformly from [first_query, last_query)
    last_query: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scenes < 1 or self.width < 2:
            raise ValueError(f"branching needs scenes >= 1 and width >= 2, got {self.scenes}, {self.width}")
        if not 0 <= self.first_query < self.last_query:
            raise ValueError(f"need 0 <= first_query < last_query, got {self.first_query}, {self.last_query}")
        if self.scale < 0:
            raise ValueError(f"scale must be >= 0, got {self.scale}")


@dataclass
class BranchGroup:
    """One scene's episodes: where they split and how each ended (index = copy; 0 is unperturbed)."""

    seed: int
    query: int  # the replan (0-based chunk query) at which the copies split
    tick: int  # its env step: query * execute_steps
    state_spread: float | None  # max |obs difference| across the copies at the split (0.0 = identical)
    success: list[bool] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    @property
    def mixed(self) -> bool:
        """Some copies succeeded and some did not, all from the identical split state."""
        return self.state_spread == 0.0 and 0 < sum(self.success) < len(self.success)


class BranchAt:
    """Wraps a PolicyFn for one lockstep group: at chunk query ``query`` every row but row 0 gets a
    smooth offset of ``scale``; records the largest observation difference across rows at that query."""

    def __init__(self, policy: PolicyFn, query: int, scale: float, seed: int) -> None:
        self.policy, self.query, self.scale = policy, query, scale
        self.rng = np.random.default_rng(seed)
        self.calls = 0
        self.state_spread: float | None = None

    def __call__(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        chunk = np.asarray(self.policy(obs, noise))
        if self.calls == self.query:
            self.state_spread = float(np.abs(obs - obs[:1]).max())
            delta = smooth_offsets(self.rng, chunk.shape, self.scale).astype(chunk.dtype)
            delta[0] = 0.0
            chunk = chunk + delta
        self.calls += 1
        return chunk


def run_branches(
    task: str,
    policy: PolicyFn,
    normalizer: Normalizer,
    config: BranchConfig,
    execute_steps: int,
    say: Callable[[str], None] = print,
) -> tuple[list[EpisodeArrays], list[BranchGroup]]:
    """Run ``config.scenes`` groups of ``config.width`` lockstep copies of ``policy`` (deterministic:
    zero flow noise, no takeover). Episodes come back grouped: group g's copy b is ``episodes[g * width + b]``."""
    fleet = SimFleet((task,), config.width, None)
    rng = np.random.default_rng([config.seed, 4099])
    sampler = RolloutConfig(execute_steps=execute_steps, noise_scale=0.0)
    episodes: list[EpisodeArrays] = []
    groups: list[BranchGroup] = []
    t0 = time.perf_counter()
    try:
        for s in range(config.scenes):
            seed = BRANCH_SEED_BASE + s
            query = int(rng.integers(config.first_query, config.last_query))
            branched = BranchAt(policy, query, config.scale, seed)
            specs = [EpisodeSpec(task, seed)] * config.width
            results, _ = fleet.run(branched, normalizer, specs, np.random.default_rng(seed), sampler)
            episodes += [r.episode for r in results]
            groups.append(
                BranchGroup(
                    seed=seed,
                    query=query,
                    tick=query * execute_steps,
                    state_spread=branched.state_spread,
                    success=[bool(r.success) for r in results],
                    lengths=[int(r.length) for r in results],
                )
            )
    finally:
        fleet.close()
    mixed = sum(g.mixed for g in groups)
    say(f"  {config.scenes} branched scenes x {config.width}: {mixed} mixed ({time.perf_counter() - t0:.0f} s)")
    return episodes, groups


def split_groups(
    episodes: list[EpisodeArrays], groups: list[BranchGroup], held_out: float
) -> tuple[tuple[list[EpisodeArrays], list[BranchGroup]], tuple[list[EpisodeArrays], list[BranchGroup]]]:
    """``((train episodes, groups), (held-out episodes, groups))``: the last ``round(held_out * scenes)``
    whole groups are held out, so a critic trained on the rest is ranked on scenes it never saw."""
    if not 0.0 <= held_out < 1.0:
        raise ValueError(f"held_out must be in [0, 1), got {held_out}")
    if not groups or len(episodes) % len(groups):
        raise ValueError(f"{len(episodes)} episodes do not split into {len(groups)} equal groups")
    width = len(episodes) // len(groups)
    keep = len(groups) - round(held_out * len(groups))
    return (episodes[: keep * width], groups[:keep]), (episodes[keep * width :], groups[keep:])


@dataclass(frozen=True)
class SplitRows:
    """One mixed group's rows at its split tick: the same state, one chunk per copy, and the outcomes."""

    obs: np.ndarray  # (width, obs_dim) normalised
    actions: np.ndarray  # (width, H, A) normalised chunks
    success: np.ndarray  # (width,) bool


def split_rows(
    normalizer: Normalizer, episodes: list[EpisodeArrays], groups: list[BranchGroup], gamma: float, horizon: int
) -> list[SplitRows]:
    """Every mixed group's rows at its split tick, normalised as the replay feeds a critic. Built once
    per set of groups; :func:`branch_ranking` then scores any number of critics on them."""
    width = len(episodes) // max(len(groups), 1)
    mixed = [g for g, group in enumerate(groups) if group.mixed]
    buffer = ReplayBuffer(normalizer, horizon, gamma)
    chosen = [episodes[g * width + b] for g in mixed for b in range(width)]
    buffer.add_episodes(chosen)
    if buffer.num_episodes != len(chosen):
        raise ValueError(f"{len(chosen) - buffer.num_episodes} branch episodes share an episode_id")
    episode_col, step_col = buffer.column("episode"), buffer.column("step")
    out = []
    for k, g in enumerate(mixed):
        rows = []
        for b in range(width):
            hit = np.nonzero((episode_col == k * width + b) & (step_col == groups[g].tick))[0]
            rows.append(int(hit[0]) if hit.size else -1)
        if min(rows) < 0:
            continue  # a copy ended before the split (cannot happen from identical states; kept safe)
        batch = buffer.gather(np.asarray(rows))
        out.append(SplitRows(batch["obs"], batch["actions"], np.asarray(groups[g].success)))
    return out


def branch_ranking(q_fn: Callable, rows: list[SplitRows]) -> dict:
    """P(Q(successful copy) > Q(failed copy)) over all such pairs within each group of ``rows`` (same
    state, different chunks). 0.5 is a critic blind to the chunk; ties never count as ordered."""
    agree = pairs = 0
    for group in rows:
        q = np.asarray(q_fn(group.obs, group.actions), np.float64)
        wins, losses = q[group.success], q[~group.success]
        agree += int((wins[:, None] > losses[None, :]).sum())
        pairs += wins.size * losses.size
    return {"agreement": agree / pairs if pairs else None, "pairs": pairs, "mixed_groups": len(rows)}
