"""LWD on the uniform interface, and the IQL expectile value ablation checked against independent maths.

The expectile ablation must be IQL's value learning (Kostrikov et al., reference code
``ikostrikov/implicit_q_learning`` ``critic.py``): V regresses ``min(Q1, Q2)`` of the EMA target
critic on replay actions with the asymmetric squared loss ``|tau - 1(u < 0)| u^2``, ``u = Q - V``
(weight tau where ``u > 0``), and the critic then regresses ``r + discount * V_new(s')``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers.learner_batches import TINY_NETWORK, random_batch

from lwd_learner.agent import LWDAgent
from lwd_learner.baselines import LWDMethod, SFTMethod
from lwd_learner.config import LearnerConfig, PolicyConfig, ValueConfig

SMALL = TINY_NETWORK
B = 16


def _config(value: ValueConfig | None = None) -> LearnerConfig:
    return LearnerConfig(
        network=SMALL, value=value or ValueConfig(), policy=PolicyConfig(flow_steps=2, qam_loss_steps=None)
    )


def _batch(key: jax.Array) -> dict[str, jax.Array]:
    return random_batch(key, SMALL, B, flags=False)


def _numpy_expectile(x: np.ndarray, tau: float) -> float:
    """Root of ``tau * E[(x - e)+] = (1 - tau) * E[(e - x)+]`` by bisection (the tau-expectile)."""
    lo, hi = float(x.min()), float(x.max())
    for _ in range(200):
        e = 0.5 * (lo + hi)
        if tau * np.maximum(x - e, 0).sum() > (1 - tau) * np.maximum(e - x, 0).sum():
            lo = e
        else:
            hi = e
    return 0.5 * (lo + hi)


def test_lwd_adapter_starts_from_reference_and_tracks_mean_tau() -> None:
    config = _config()
    reference = SFTMethod(config).init(jax.random.key(42)).params
    method = LWDMethod(config)
    batch, noise = _batch(jax.random.key(1)), jax.random.normal(jax.random.key(2), (B, SMALL.horizon, SMALL.action_dim))
    state = method.init(jax.random.key(0), reference_params=reference)
    want = np.asarray(SFTMethod(config).sample(SFTMethod(config).init(jax.random.key(42)), batch["obs"], noise))
    np.testing.assert_allclose(method.sample(state, batch["obs"], noise), want, atol=1e-6)
    assert np.isnan(method.mean_tau(state))
    taus = []
    for i in range(3):
        state, metrics = method.update(state, _batch(jax.random.key(10 + i)), jax.random.key(20 + i))
        taus.append(float(metrics["tau_mean"]))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert int(state.tau_count) == 3
    assert method.mean_tau(state) == pytest.approx(np.mean(taus), rel=1e-6)  # Table III's constant
    assert not np.allclose(method.sample(state, batch["obs"], noise), want, atol=1e-6)
    for leaf_new, leaf_ref in zip(
        jax.tree_util.tree_leaves(state.reference_params), jax.tree_util.tree_leaves(reference), strict=True
    ):
        np.testing.assert_array_equal(leaf_new, leaf_ref)  # f_beta stays frozen


def test_expectile_value_loss_minimiser_is_the_expectile() -> None:
    """Fitting the agent's expectile V to fixed targets at one state converges to their tau-expectile."""
    tau = 0.9
    agent = LWDAgent(_config(ValueConfig(value_mode="expectile", tau_base=tau)))
    targets = jnp.asarray(np.random.default_rng(0).gamma(2.0, 0.2, size=256), jnp.float32)
    obs = jnp.ones((targets.shape[0], SMALL.obs_dim))
    params = agent.value.init(jax.random.key(0), obs[:1])
    tx = optax.adam(1e-2)

    @jax.jit
    def step(params, opt):
        grads = jax.grad(lambda p: agent._value_loss(p, obs, targets)[0])(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    opt = tx.init(params)
    for _ in range(600):
        params, opt = step(params, opt)
    v = float(agent.value.apply(params, obs[:1])[0, 0])
    want = _numpy_expectile(np.asarray(targets, np.float64), tau)
    assert v == pytest.approx(want, abs=2e-3)
    assert want > float(jnp.mean(targets)) + 0.05  # tau > 1/2: biased toward the upper tail


def test_expectile_update_is_iql_value_and_critic_learning() -> None:
    """One expectile-mode update, recomputed independently from the pre-update networks."""
    tau = 0.7
    agent = LWDAgent(_config(ValueConfig(value_mode="expectile", tau_base=tau)))
    state = agent.start_rl(agent.init(jax.random.key(3)))
    batch = _batch(jax.random.key(4))
    new, metrics = agent.update(state, batch, jax.random.key(5))

    obs, actions = batch["obs"], batch["actions"]
    q_target = np.min(np.asarray(agent.critic.apply(state.target_critic_params, obs, actions), np.float64), axis=0)
    v_old = np.asarray(agent.value.apply(state.value_params, obs), np.float64)[:, 0]
    u = q_target - v_old
    v_loss = np.mean(np.where(u > 0, tau, 1 - tau) * u**2)  # IQL critic.py form
    assert float(metrics["v_loss"]) == pytest.approx(v_loss, rel=1e-4)

    v_next = np.asarray(agent.value.apply(new.value_params, batch["next_obs"]), np.float64)[:, 0]  # updated V
    y = np.asarray(batch["reward"]) + np.asarray(batch["discount"]) * v_next
    q = np.asarray(agent.critic.apply(state.critic_params, obs, actions), np.float64)
    assert float(metrics["q_loss"]) == pytest.approx(np.mean((q - y[None]) ** 2), rel=1e-4)
    assert float(metrics["bootstrap_mean"]) == pytest.approx(np.mean(v_next), rel=1e-4, abs=1e-6)
    assert float(metrics["tau_mean"]) == pytest.approx(tau)
