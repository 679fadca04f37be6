"""QAM's memoryless noise-schedule option (``PolicyConfig.noise_schedule="memoryless"``).

Checked independently: the exponential-integrator SDE reproduces the known marginals of a
Gaussian flow and forgets its start; the hand-written lean adjoint equals autodiff and finite
differences through the whole stochastic rollout; on the 2-D bandit the memoryless update
tilts the policy toward the best in-support action; the agent runs it and the default stays "lwd".
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lwd_learner import flow, qam
from lwd_learner.agent import LWDAgent
from lwd_learner.config import LearnerConfig, NetworkConfig, PolicyConfig
from lwd_learner.networks import VelocityField

MU, STD = 1.5, 0.3


def _gaussian_field(cond: object, a: jax.Array, w: jax.Array) -> jax.Array:
    """Exact flow-matching velocity for data N(MU, STD^2) and noise N(0, 1): E[x1 - x0 | a_w = a]."""
    del cond
    w = w[:, None, None]
    return MU + (w * STD**2 - (1 - w)) / ((1 - w) ** 2 + w**2 * STD**2) * (a - w * MU)


def test_memoryless_rollout_has_the_flow_marginals_and_forgets_its_start() -> None:
    n = 4000
    noise = jax.random.normal(jax.random.key(0), (n, 1, 1))
    for steps, tol in ((50, 0.03), (10, 0.06)):  # first-order integrator: the error shrinks with N
        step_noise = jax.random.normal(jax.random.key(steps), (steps, n, 1, 1))
        path, times = qam.memoryless_trajectory(_gaussian_field, None, noise, step_noise)
        assert path.shape == (steps + 1, n, 1, 1) and np.all(np.isfinite(path))
        end = np.asarray(path[-1]).ravel()
        assert abs(end.mean() - MU) < tol and abs(end.std() - STD) < tol, (steps, end.mean(), end.std())
        mid, w = np.asarray(path[steps // 2]).ravel(), float(times[steps // 2])
        assert abs(mid.mean() - w * MU) < tol and abs(mid.std() - np.hypot(1 - w, w * STD)) < tol
        assert abs(np.corrcoef(np.asarray(noise).ravel(), end)[0, 1]) < 0.05  # memoryless: a_0 forgotten


def test_memoryless_adjoint_matches_autodiff_and_finite_differences() -> None:
    """With f_theta = f_beta and fixed SDE noise, g_k = d(-Q(a_N) / lambda) / d a_k exactly."""
    b, h, a, steps, lam = 3, 2, 2, 6, 2.0
    rng = np.random.default_rng(0)
    m = jnp.asarray(rng.normal(size=(h * a, h * a)) * 0.6, jnp.float32)
    c = jnp.asarray(rng.normal(size=h * a), jnp.float32)

    def field(cond, x, w):
        del cond
        flat = x.reshape(x.shape[0], -1)
        return (jnp.tanh(flat @ m.T) * (1.0 + w[:, None]) + c).reshape(x.shape)

    def q_fn(x):
        return -jnp.sum(jnp.square(x - 0.5), axis=(1, 2)) + jnp.sum(jnp.sin(x), axis=(1, 2))

    noise = jnp.asarray(rng.normal(size=(b, h, a)), jnp.float32)
    step_noise = jnp.asarray(rng.normal(size=(steps, b, h, a)), jnp.float32)
    targets = qam.memoryless_adjoint_targets(field, field, q_fn, None, None, noise, step_noise, lam)
    w2 = jnp.full((b,), targets.times[2])
    np.testing.assert_allclose(targets.reference_velocity[2], field(None, targets.states[2], w2), atol=1e-6)

    def objective_from(k: int, a_k: jax.Array) -> jax.Array:
        x = a_k
        for j in range(k, steps):
            w, w_next = j / steps, (j + 1) / steps
            x = qam.memoryless_step(x, field(None, x, jnp.full((b,), w)), w, w_next, step_noise[j])
        return -jnp.sum(q_fn(x)) / lam

    for k in (0, 1, steps - 1):
        auto = jax.grad(objective_from, argnums=1)(k, targets.states[k])
        np.testing.assert_allclose(targets.adjoints[k], auto, rtol=1e-4, atol=1e-5, err_msg=f"step {k}")
    k, eps = 2, 1e-2  # central differences on two coordinates
    for idx in ((0, 0, 0), (2, 1, 1)):
        bump = jnp.zeros((b, h, a)).at[idx].set(eps)
        fd = (objective_from(k, targets.states[k] + bump) - objective_from(k, targets.states[k] - bump)) / (2 * eps)
        assert float(targets.adjoints[k][idx]) == pytest.approx(float(fd), rel=2e-2, abs=2e-3)


def test_memoryless_qam_bandit_tilts_toward_best_in_support_action() -> None:
    """Reference: blobs at (-1, 0) and (1, 0); Q peaks at (1, 0). Eq. 8's tilt with lambda = 2 puts
    ~88% of the mass on the right blob; memoryless QAM must move a good part of the way while most
    samples stay within the blobs."""
    centres, best, spread, batch = jnp.array([[-1.0, 0.0], [1.0, 0.0]]), jnp.array([1.0, 0.0]), 0.1, 128
    net = VelocityField(horizon=1, action_dim=2, hidden_dims=(64, 64), obs_hidden_dims=(16,), obs_embed_dim=16)
    obs = jnp.zeros((batch, 1))

    def field(p):
        return lambda o, x, w: net.apply(p, o, x, w)

    def q_fn(x):
        return -jnp.sum(jnp.square(x[:, 0] - best), axis=-1)

    tx = optax.adam(2e-3)

    @jax.jit
    def sft_step(p, opt, key):
        k_pick, k_data, k_noise, k_time = jax.random.split(key, 4)
        data = (centres[jax.random.randint(k_pick, (batch,), 0, 2)] + spread * jax.random.normal(k_data, (batch, 2)))[
            :, None
        ]
        noise, w = jax.random.normal(k_noise, data.shape), jax.random.uniform(k_time, (batch,))
        grads = jax.grad(lambda p_: flow.flow_matching_loss(field(p_), obs, data, noise, w))(p)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt

    params = net.init(jax.random.key(0), obs, jnp.zeros((batch, 1, 2)), jnp.zeros((batch,)))
    opt = tx.init(params)
    for i in range(1500):
        params, opt = sft_step(params, opt, jax.random.key(i))
    reference = params

    def stats(p) -> tuple[float, float]:
        n = 2000
        x = flow.euler_sample(field(p), jnp.zeros((n, 1)), jax.random.normal(jax.random.key(99), (n, 1, 2)), 10)
        dist = jnp.min(jnp.linalg.norm(x[:, 0, None] - centres[None], axis=-1), axis=1)
        return float(jnp.mean(x[:, 0, 0] > 0)), float(jnp.mean(dist > 4 * spread))

    right_before, off_before = stats(reference)
    assert 0.35 < right_before < 0.65 and off_before < 0.1

    @jax.jit
    def qam_step(p, opt, key):
        k_noise, k_sde = jax.random.split(key)
        targets = qam.memoryless_adjoint_targets(
            field(p), field(reference), q_fn, obs, obs,
            jax.random.normal(k_noise, (batch, 1, 2)), jax.random.normal(k_sde, (10, batch, 1, 2)), 2.0,
        )  # fmt: skip
        grads = jax.grad(lambda p_: qam.adjoint_matching_loss(field(p_), obs, targets, schedule="memoryless"))(p)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt

    policy, opt = reference, tx.init(reference)
    for i in range(400):
        policy, opt = qam_step(policy, opt, jax.random.key(10_000 + i))
    right_after, off_after = stats(policy)
    # Seen: right 0.49 -> 0.70-0.78 (the exact tilt's 0.88 is not reached with 10 coarse SDE steps),
    # off-support 0.05 -> 0.065-0.09 (mass in transit between the blobs); the LWD schedule moves
    # less (test_learner_qam_bandit.py asks +0.07) and keeps support tighter.
    assert right_after > right_before + 0.15, (right_before, right_after)
    assert off_after < 0.15, (off_before, off_after)


def test_agent_memoryless_option_and_default() -> None:
    assert PolicyConfig().noise_schedule == "lwd"
    with pytest.raises(ValueError, match="noise_schedule"):
        PolicyConfig(noise_schedule="ddpm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown QAM noise schedule"):
        qam.schedule_sigma("ddpm", jnp.ones(1))  # type: ignore[arg-type]
    net = NetworkConfig(
        obs_dim=6, horizon=4, action_dim=3, policy_hidden=(32,), critic_hidden=(32,), value_hidden=(32,),
        obs_hidden=(32,), obs_embed_dim=16, time_dim=16, pool_dim=16, pool_heads=2,
    )  # fmt: skip
    config = LearnerConfig(network=net, policy=PolicyConfig(flow_steps=3, noise_schedule="memoryless"))
    agent = LWDAgent(config)
    state = agent.start_rl(agent.init(jax.random.key(0)))
    k = jax.random.split(jax.random.key(1), 4)
    batch = {
        "obs": jax.random.normal(k[0], (8, 6)),
        "actions": jax.random.normal(k[1], (8, 4, 3)),
        "next_obs": jax.random.normal(k[2], (8, 6)),
        "reward": jnp.zeros(8),
        "discount": jnp.full(8, 0.99),
    }
    new, metrics = agent.update(state, batch, jax.random.key(2))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert float(metrics["qam_loss"]) > 0
    new_leaves, old_leaves = (
        jax.tree_util.tree_leaves(new.policy_params),
        jax.tree_util.tree_leaves(state.policy_params),
    )
    changed = [not np.array_equal(x, y) for x, y in zip(new_leaves, old_leaves, strict=True)]
    assert any(changed)
    assert dataclasses.replace(config.policy, noise_schedule="lwd") == PolicyConfig(flow_steps=3)
