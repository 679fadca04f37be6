"""A tiny network config and random replay batches shared by the learner's unit tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lwd_learner.config import NetworkConfig

TINY_NETWORK = NetworkConfig(
    obs_dim=6,
    horizon=4,
    action_dim=3,
    policy_hidden=(32, 32),
    critic_hidden=(32,),
    value_hidden=(32,),
    obs_hidden=(32,),
    obs_embed_dim=16,
    time_dim=16,
    pool_dim=16,
    pool_heads=2,
)


def random_batch(key: jax.Array, net: NetworkConfig, size: int, flags: bool = True) -> dict[str, jax.Array]:
    """Agent batch keys (obs, actions, next_obs, reward, discount); with ``flags`` also the baselines'
    intervention / success / return_to_go."""
    k = jax.random.split(key, 8 if flags else 5)
    batch = {
        "obs": jax.random.normal(k[0], (size, net.obs_dim)),
        "actions": jax.random.normal(k[1], (size, net.horizon, net.action_dim)),
        "next_obs": jax.random.normal(k[2], (size, net.obs_dim)),
        "reward": (jax.random.uniform(k[3], (size,)) < 0.3).astype(jnp.float32),
        "discount": jnp.where(jax.random.uniform(k[4], (size,)) < 0.2, 0.0, 0.99),
    }
    if flags:
        batch["intervention"] = jax.random.uniform(k[5], (size,)) < 0.25
        batch["success"] = jax.random.uniform(k[6], (size,)) < 0.5
        batch["return_to_go"] = jax.random.uniform(k[7], (size,))
    return batch
