"""fit_mc_critic: a critic regressed on returns that depend only on the action learns to rank actions."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers.learner_batches import TINY_NETWORK

from lwd_learner.agent import LWDAgent
from lwd_learner.config import LearnerConfig, PolicyConfig
from lwd_learner.critic_diagnostics import agent_q_fn
from lwd_learner.mc_critic import fit_mc_critic

NET = TINY_NETWORK


def _return_of(actions: np.ndarray) -> np.ndarray:
    """Success iff the chunk's first action dim averages above 0: one chunk decides the outcome."""
    return (actions[:, :, 0].mean(axis=1) > 0).astype(np.float32)


def _sample(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    obs = rng.standard_normal((size, NET.obs_dim)).astype(np.float32)
    actions = rng.standard_normal((size, NET.horizon, NET.action_dim)).astype(np.float32)
    return {"obs": obs, "actions": actions, "return_to_go": _return_of(actions)}


def test_a_return_that_depends_on_the_chunk_is_learned():
    agent = LWDAgent(LearnerConfig(network=NET, policy=PolicyConfig(flow_steps=2, qam_loss_steps=None)))
    params, loss = fit_mc_critic(agent, _sample, updates=400, batch_size=128, key=jax.random.key(0), lr=1e-3)
    held_out = _sample(np.random.default_rng(99), 512)
    q = np.asarray(agent_q_fn(agent, params)(held_out["obs"], held_out["actions"]))
    truth = held_out["return_to_go"]
    assert q[truth == 1].mean() - q[truth == 0].mean() > 0.5  # 0 for a critic blind to the action
    assert loss < 0.1  # MSE of a 0/1 target: 0.25 for the best constant


def test_bad_sizes_are_refused():
    agent = LWDAgent(LearnerConfig(network=NET))
    with pytest.raises(ValueError, match="updates"):
        fit_mc_critic(agent, _sample, updates=0, batch_size=8, key=jax.random.key(0))
