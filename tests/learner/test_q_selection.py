"""Best-of-N by Q: the executed chunk is the candidate the critic rates highest, checked against
candidates and Q values recomputed one by one outside the selector."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.learner_batches import TINY_NETWORK

from lwd_learner.agent import LWDAgent
from lwd_learner.config import LearnerConfig, PolicyConfig
from lwd_learner.critic_diagnostics import agent_q_fn, smooth_perturbation
from lwd_learner.q_selection import best_of_n_policy, random_pick_policy, select_by_q

B = 6


def _agent_and_state():
    agent = LWDAgent(LearnerConfig(network=TINY_NETWORK, policy=PolicyConfig(flow_steps=2, qam_loss_steps=None)))
    return agent, agent.init(jax.random.key(0))


def _obs_and_noise(seed: int = 1):
    rng = np.random.default_rng(seed)
    net = TINY_NETWORK
    obs = rng.standard_normal((B, net.obs_dim)).astype(np.float32)
    noise = rng.standard_normal((B, net.horizon, net.action_dim)).astype(np.float32)
    return obs, noise


def test_select_by_q_takes_each_rows_argmax():
    rng = np.random.default_rng(3)
    chunks = rng.standard_normal((5, 4, 3, 2)).astype(np.float32)
    q = rng.standard_normal((5, 4)).astype(np.float32)
    got = np.asarray(select_by_q(jnp.asarray(chunks), jnp.asarray(q)))
    for row in range(4):
        np.testing.assert_array_equal(got[row], chunks[int(np.argmax(q[:, row])), row])


def test_best_of_n_executes_the_highest_q_candidate():
    agent, state = _agent_and_state()
    obs, noise = _obs_and_noise()
    n, scale, seed = 5, 0.8, 11
    chosen = best_of_n_policy(agent, state.reference_params, state.critic_params, n, scale, seed)(obs, noise)
    # the same candidates, rebuilt one at a time: the caller's noise, then the policy's own draws
    extra = scale * np.random.default_rng(seed).standard_normal((n - 1, *noise.shape)).astype(np.float32)
    q_fn = agent_q_fn(agent, state.critic_params)
    candidates = [np.asarray(agent.sample_actions(state.reference_params, obs, z)) for z in (noise, *extra)]
    q = np.stack([np.asarray(q_fn(jnp.asarray(obs), jnp.asarray(c))) for c in candidates])
    assert np.all(np.ptp(q, axis=0) > 0), "an untrained critic still separates the candidates"
    best = np.argmax(q, axis=0)
    assert len(set(best.tolist())) > 1, "rows should pick different candidates, else the check is weak"
    for row in range(B):
        np.testing.assert_allclose(chosen[row], candidates[best[row]][row], rtol=0, atol=1e-6)


def test_one_candidate_is_the_reference_itself():
    agent, state = _agent_and_state()
    obs, noise = _obs_and_noise(2)
    reference = np.asarray(agent.sample_actions(state.reference_params, obs, noise))
    for policy in (
        best_of_n_policy(agent, state.reference_params, state.critic_params, 1, 1.0),
        random_pick_policy(agent, state.reference_params, 1, 1.0),
    ):
        np.testing.assert_allclose(policy(obs, noise), reference, rtol=0, atol=1e-6)


def test_random_pick_mixes_the_callers_noise_and_fresh_draws():
    agent, state = _agent_and_state()
    obs, noise = _obs_and_noise(4)
    reference = np.asarray(agent.sample_actions(state.reference_params, obs, noise))
    picks = [random_pick_policy(agent, state.reference_params, 2, 1.0, seed)(obs, noise) for seed in range(4)]
    same = np.array([[np.allclose(p[r], reference[r], atol=1e-6) for r in range(B)] for p in picks])
    assert 0 < same.mean() < 1  # about half the rows keep candidate 0, the rest a fresh draw


def test_offset_candidates_are_the_reference_chunk_plus_smooth_offsets():
    agent, state = _agent_and_state()
    obs, noise = _obs_and_noise(5)
    n, scale, seed = 6, 0.7, 13
    chosen = best_of_n_policy(agent, state.reference_params, state.critic_params, n, scale, seed, "offset")(obs, noise)
    reference = np.asarray(agent.sample_actions(state.reference_params, obs, noise))
    # rebuilt outside the selector: the same offsets (one smooth_perturbation draw for all candidates)
    key = jax.random.key(int(np.random.default_rng(seed).integers(2**31)))
    net = TINY_NETWORK
    offsets = np.asarray(smooth_perturbation(key, ((n - 1) * B, net.horizon, net.action_dim), scale))
    candidates = [reference, *(reference + o for o in offsets.reshape(n - 1, B, net.horizon, net.action_dim))]
    q_fn = agent_q_fn(agent, state.critic_params)
    q = np.stack([np.asarray(q_fn(jnp.asarray(obs), jnp.asarray(c))) for c in candidates])
    best = np.argmax(q, axis=0)
    assert len(set(best.tolist())) > 1, "rows should pick different candidates, else the check is weak"
    for row in range(B):
        np.testing.assert_allclose(chosen[row], candidates[best[row]][row], rtol=0, atol=1e-5)
    # the offsets are linear in time (a smooth chunk change, not per-tick noise)
    np.testing.assert_allclose(np.diff(offsets, n=2, axis=1), 0.0, atol=1e-5)
    picks = [random_pick_policy(agent, state.reference_params, 2, scale, s, "offset")(obs, noise) for s in range(4)]
    kept = np.array([[np.allclose(p[r], reference[r], atol=1e-6) for r in range(B)] for p in picks])
    assert 0 < kept.mean() < 1  # about half the rows keep the reference's chunk, the rest an offset one
    with pytest.raises(ValueError, match="candidates"):
        best_of_n_policy(agent, state.reference_params, state.critic_params, n, scale, candidates="gaussian")
