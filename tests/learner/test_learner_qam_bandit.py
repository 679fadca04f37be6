"""Toy bandit: QAM moves a flow policy toward the critic's best action while staying in data support.

State-free 2-D bandit. Reference data: two Gaussian blobs at (-1, 0) and (1, 0). The known
Q(a) = -||a - (1, 0)||^2 peaks at the centre of the right blob, i.e. inside the data support.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lwd_learner import flow, qam
from lwd_learner.networks import VelocityField

CENTRES = jnp.array([[-1.0, 0.0], [1.0, 0.0]])
BEST = CENTRES[1]
STD = 0.1
B = 128


def _data(key: jax.Array, n: int) -> jax.Array:
    k_pick, k_noise = jax.random.split(key)
    centre = CENTRES[jax.random.randint(k_pick, (n,), 0, 2)]
    return (centre + STD * jax.random.normal(k_noise, (n, 2)))[:, None, :]


def _q(actions: jax.Array) -> jax.Array:
    return -jnp.sum(jnp.square(actions[:, 0] - BEST), axis=-1)


def _stats(velocity_fn, key: jax.Array) -> dict[str, float]:
    n = 2000
    samples = flow.euler_sample(velocity_fn, jnp.zeros((n, 1)), jax.random.normal(key, (n, 1, 2)), 10)
    dist = jnp.min(jnp.linalg.norm(samples[:, 0, None] - CENTRES[None], axis=-1), axis=1)
    return {
        "right": float(jnp.mean(samples[:, 0, 0] > 0)),
        "off_support": float(jnp.mean(dist > 4 * STD)),
        "q": float(jnp.mean(_q(samples))),
    }


def test_qam_bandit_improves_q_within_support() -> None:
    net = VelocityField(
        horizon=1, action_dim=2, hidden_dims=(64, 64), obs_hidden_dims=(16,), obs_embed_dim=16, time_dim=32
    )
    obs = jnp.zeros((B, 1))
    params = net.init(jax.random.key(0), obs, jnp.zeros((B, 1, 2)), jnp.zeros((B,)))

    def field(p):
        return lambda o, a, w: net.apply(p, o, a, w)

    sft_tx = optax.adam(2e-3)

    @jax.jit
    def sft_step(p, opt, key):
        k_data, k_noise, k_time = jax.random.split(key, 3)
        actions = _data(k_data, B)
        noise = jax.random.normal(k_noise, actions.shape)
        w = jax.random.uniform(k_time, (B,))
        grads = jax.grad(lambda p_: flow.flow_matching_loss(field(p_), obs, actions, noise, w))(p)
        updates, opt = sft_tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt

    opt = sft_tx.init(params)
    for i in range(1500):
        params, opt = sft_step(params, opt, jax.random.key(i))
    reference = params
    before = _stats(field(reference), jax.random.key(99))
    # the reference must have learned the two blobs for the test to mean anything
    assert 0.35 < before["right"] < 0.65 and before["off_support"] < 0.1, before

    qam_tx = optax.adam(2e-3)

    @jax.jit
    def qam_step(p, opt, key):
        targets = qam.adjoint_targets(field(reference), _q, obs, jax.random.normal(key, (B, 1, 2)), 10, 2.0)
        grads = jax.grad(lambda p_: qam.adjoint_matching_loss(field(p_), obs, targets))(p)
        updates, opt = qam_tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt

    policy, opt = reference, qam_tx.init(reference)
    for i in range(400):
        policy, opt = qam_step(policy, opt, jax.random.key(10_000 + i))
    after = _stats(field(policy), jax.random.key(99))

    assert after["q"] > before["q"] + 0.2, (before, after)
    assert after["right"] > before["right"] + 0.07, (before, after)
    assert after["off_support"] <= max(before["off_support"], 0.03) + 0.02, (before, after)
