"""Best-of-N sampling by Q: execute the reference's candidate chunk the critic likes most.

A support-constrained extraction that needs no action gradient (EMaQ, Ghasemipour et al. 2021;
IDQL's resampling, Hansen-Estruch et al. 2023): draw N chunks from the frozen reference flow and
execute the one with the highest mean-of-two-heads Q. The bench uses it as a check of the critic,
not as a policy to ship (the exported artifact carries no critic): if best-of-N beats both the
reference and a random pick among the same candidates, Q ranks the reference's own chunks usefully
and a policy that fails to improve points at the gradient-based extraction (QAM); if it does not,
the critic has no usable action ranking and no extractor built on it can help.

Candidate 0 is always the chunk from the caller's noise (what the reference alone would execute);
candidates 1..N-1 come from ``noise_scale * N(0, I)`` drawn from this policy's own numpy generator.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lwd_learner.rollout import PolicyFn


def select_by_q(chunks: jax.Array, q: jax.Array) -> jax.Array:
    """``(B, H, A)``: per row, the candidate of ``chunks (N, B, H, A)`` with the largest ``q (N, B)``
    (the first such candidate on ties)."""
    best = jnp.argmax(q, axis=0)  # (B,)
    return jnp.take_along_axis(chunks, best[None, :, None, None], axis=0)[0]


@functools.cache
def _best_of_n_fn(agent: Any):
    """One jitted ``(reference, critic, obs (B, D), noises (N, B, H, A)) -> ((B, H, A), q (N, B))`` per agent."""

    def fn(reference_params, critic_params, obs, noises):
        chunks = jax.vmap(lambda noise: agent.sample_actions(reference_params, obs, noise))(noises)
        q = jax.vmap(lambda a: jnp.mean(agent.critic.apply(critic_params, obs, a), axis=0))(chunks)
        return select_by_q(chunks, q), q

    return jax.jit(fn)


def best_of_n_policy(
    agent: Any, reference_params: Any, critic_params: Any, n: int, noise_scale: float, seed: int = 0
) -> PolicyFn:
    """A :data:`~lwd_learner.rollout.PolicyFn` that executes the best of ``n`` reference chunks by Q."""
    if n < 1 or noise_scale < 0:
        raise ValueError(f"best-of-n needs n >= 1 and noise_scale >= 0, got n={n}, noise_scale={noise_scale}")
    fn = _best_of_n_fn(agent)
    rng = np.random.default_rng(seed)

    def policy(obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        extra = noise_scale * rng.standard_normal((n - 1, *noise.shape)).astype(noise.dtype)
        noises = np.concatenate([noise[None], extra], axis=0)
        chunk, _ = fn(reference_params, critic_params, jnp.asarray(obs), jnp.asarray(noises))
        return np.asarray(chunk)

    return policy


def random_pick_policy(agent: Any, reference_params: Any, n: int, noise_scale: float, seed: int = 0) -> PolicyFn:
    """The control for :func:`best_of_n_policy`: one of the same ``n`` candidates, picked uniformly."""
    if n < 1 or noise_scale < 0:
        raise ValueError(f"random pick needs n >= 1 and noise_scale >= 0, got n={n}, noise_scale={noise_scale}")
    rng = np.random.default_rng(seed)

    def policy(obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        pick = rng.integers(n, size=noise.shape[0])
        drawn = noise_scale * rng.standard_normal(noise.shape).astype(noise.dtype)
        chosen = np.where((pick == 0)[:, None, None], noise, drawn)
        return np.asarray(agent.sample_actions(reference_params, jnp.asarray(obs), jnp.asarray(chosen)))

    return policy
