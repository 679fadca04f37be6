"""The training pipeline end to end on a tiny network: SFT trains only the reference, offline RL
uses the paper's n-step rule, online rounds roll out the *published* policy with takeovers, mix
replay 1:1 and publish every N updates through the callback."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import dataclasses

import jax
import numpy as np
import pytest

from lwd_learner.agent import LWDAgent
from lwd_learner.config import LearnerConfig, NetworkConfig, PolicyConfig
from lwd_learner.dataset import compute_normalizer, load_episodes
from lwd_learner.replay import ReplayBuffer
from lwd_learner.rollout import SimFleet, TakeoverConfig
from lwd_learner.stages import (
    OfflineConfig,
    OnlineConfig,
    SFTConfig,
    numpy_rng,
    online_specs,
    run_offline,
    run_online,
    run_sft,
)
from lwd_protocol.episode import ActionSource, EpisodeSource

TINY = NetworkConfig(
    policy_hidden=(16,),
    critic_hidden=(16,),
    value_hidden=(16,),
    obs_hidden=(16,),
    obs_embed_dim=8,
    time_dim=8,
    pool_dim=8,
    pool_heads=2,
)


def _same(a, b) -> bool:
    return all(bool(np.array_equal(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from lwd_sim.generate import GenConfig, generate

    folder = tmp_path_factory.mktemp("offline")
    generate(GenConfig(out=folder, episodes_per_task=3, tasks=("restocking",), seed=1))
    episodes = load_episodes(sorted(folder.glob("*.mcap")))
    norm = compute_normalizer(episodes)
    net = dataclasses.replace(TINY, obs_dim=norm.obs_dim, action_dim=norm.action_dim, horizon=30)
    config = LearnerConfig.offline(network=net, policy=PolicyConfig(flow_steps=2, qam_loss_steps=1))
    agent = LWDAgent(config)  # one agent for every stage keeps the test to one compilation per step
    gamma = config.value.gamma
    demos = ReplayBuffer(norm, 30, gamma)
    demos.add_episodes([e for e in episodes if e.source is EpisodeSource.DEMO])
    offline = ReplayBuffer(norm, 30, gamma)
    offline.add_episodes(episodes)
    fleet = SimFleet(["restocking"], envs_per_task=1, max_steps=60)
    yield agent, demos, offline, fleet
    fleet.close()


def test_pipeline_stages(setup) -> None:
    agent, demos, offline, fleet = setup
    state0 = agent.init(jax.random.key(0))
    state, log = run_sft(agent, state0, demos, SFTConfig(num_updates=4, batch_size=8, log_every=2), jax.random.key(1))
    assert log.updates == 4 and len(log.history) == 2 and np.isfinite(log.history[-1]["fm_loss"])
    assert not _same(state.reference_params, state0.reference_params)
    assert _same(state.critic_params, state0.critic_params)  # SFT touches only f_beta

    state = agent.start_rl(state)
    reference = state.reference_params
    state, off_log = run_offline(agent, state, offline, OfflineConfig(num_updates=3, batch_size=8), jax.random.key(2))
    assert off_log.updates == 3 and np.isfinite(off_log.mean("q_loss"))
    assert offline.column("k").max() == 1  # restocking is a grocery task: 1-step TD offline too
    assert _same(state.reference_params, reference)  # the reference stays frozen

    published: list[tuple[int, int]] = []
    online = ReplayBuffer(offline.normalizer, 30, offline.gamma)
    config = OnlineConfig(
        num_rounds=2,
        episodes_per_round=1,
        updates_per_round=3,
        batch_size=8,
        publish_every=2,
        takeover=TakeoverConfig(stall_steps=15, max_takeover_steps=30),
        eval_every_rounds=0,
    )
    state, on_log = run_online(
        agent,
        state,
        offline,
        online,
        fleet,
        config,
        jax.random.key(3),
        on_policy=lambda version, s: published.append((version, int(s.step))),
    )
    # version 1 = the offline policy at the start; then one every 2 updates (updates 2, 4, 6).
    assert [v for v, _ in published] == on_log.versions == [1, 2, 3, 4]
    assert [r.published for r in on_log.rounds] == [[2], [3, 4]]
    # round 0 ran version 1; round 1 ran the version published during round 0's training.
    assert [ep.policy_version for ep in online.episodes] == [1, 2]
    assert on_log.updates == 6 and online.num_episodes == 2 and on_log.rounds[-1].online_episodes_total == 2
    human = np.concatenate([ep.action_source for ep in online.episodes]) == ActionSource.HUMAN
    assert human.any() and on_log.rounds[0].takeovers >= 1  # a 60-step episode with 15-step patience
    assert all(ep.final_state is not None for ep in online.episodes)


def test_keys_and_specs() -> None:
    a = numpy_rng(jax.random.key(4)).integers(0, 1 << 30, 4)
    b = numpy_rng(jax.random.key(4)).integers(0, 1 << 30, 4)
    c = numpy_rng(jax.random.key(5)).integers(0, 1 << 30, 4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    specs = online_specs(("restocking", "gongfu_tea"), 5, 100)
    assert [s.task for s in specs] == ["restocking", "gongfu_tea"] * 2 + ["restocking"]
    assert [s.seed for s in specs] == [100, 101, 102, 103, 104]


def test_mismatched_buffer_is_refused(setup) -> None:
    agent, demos, _, _ = setup
    other = ReplayBuffer(demos.normalizer, 30, 0.99)
    other.add_episodes(demos.episodes)
    with pytest.raises(ValueError, match="gamma"):
        run_sft(agent, agent.init(jax.random.key(0)), other, SFTConfig(num_updates=1, batch_size=4), jax.random.key(1))
