"""A Q-network regressed on Monte-Carlo returns: the critic without temporal-difference learning.

A diagnostic for the extraction probe (issue 4). DIVL's critic learns Q(s, a) by bootstrapping from
V(s'); if that critic cannot rank chunks, two causes remain: TD does not carry one chunk's effect on
a sparse terminal reward back to that chunk, or the network cannot represent it from this data.
Regressing the same :class:`lwd_learner.networks.Critic` directly on each row's return-to-go (its
episode's discounted outcome) removes TD from the question: if this critic ranks the reference's
chunks (best-of-N by Q beats a random pick), TD is the bottleneck; if not, the data and network are.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

Batch = dict[str, np.ndarray]
SampleFn = Callable[[np.random.Generator, int], Batch]  # rows with obs, actions, return_to_go


def fit_mc_critic(
    agent, sample: SampleFn, updates: int, batch_size: int, key: jax.Array, lr: float = 3e-4, seed: int = 0
) -> tuple[object, float]:
    """Fresh critic parameters (both heads) fitted by MSE to ``return_to_go``; returns (params, last loss)."""
    if updates < 1 or batch_size < 1:
        raise ValueError(f"updates and batch_size must be >= 1, got {updates}, {batch_size}")
    net = agent.config.network
    params = agent.critic.init(
        key, jnp.zeros((1, net.obs_dim), jnp.float32), jnp.zeros((1, net.horizon, net.action_dim), jnp.float32)
    )
    tx = optax.adam(lr)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, obs, actions, returns):
        def loss_fn(p):
            q = agent.critic.apply(p, obs, actions)  # (2, B)
            return jnp.mean(jnp.square(q - returns[None]))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates_, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates_), opt, loss

    rng = np.random.default_rng(seed)
    loss = jnp.zeros(())
    for _ in range(updates):
        batch = sample(rng, batch_size)
        params, opt, loss = step(params, opt, batch["obs"], batch["actions"], batch["return_to_go"])
    return params, float(loss)
