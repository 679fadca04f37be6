"""Best-of-N sampling by Q: execute the reference's candidate chunk the critic likes most.

A support-constrained extraction that needs no action gradient (EMaQ, Ghasemipour et al. 2021;
IDQL's resampling, Hansen-Estruch et al. 2023): draw N chunks from the frozen reference flow and
execute the one with the highest mean-of-two-heads Q. The bench uses it as a check of the critic,
not as a policy to ship (the exported artifact carries no critic): if best-of-N beats both the
reference and a random pick among the same candidates, Q ranks the reference's own chunks usefully
and a policy that fails to improve points at the gradient-based extraction (QAM); if it does not,
the critic has no usable action ranking and no extractor built on it can help.

Candidate 0 is always the chunk from the caller's noise (what the reference alone would execute).
Candidates 1..N-1 come, with ``candidates="flow"``, from the reference flow at ``noise_scale * N(0, I)``
drawn from this policy's own numpy generator; with ``candidates="offset"``, they are candidate 0 plus
a smooth offset of ``noise_scale`` (:func:`lwd_learner.critic_diagnostics.smooth_perturbation`, the
shape of the probe's perturbed rollouts and same-state branches), so a critic trained on such
branches is asked to rank the kind of chunks it saw.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lwd_learner.critic_diagnostics import smooth_offsets
from lwd_learner.rollout import PolicyFn

CANDIDATES = ("flow", "offset")


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


@functools.cache
def _best_of_offsets_fn(agent: Any):
    """Jitted ``(reference, critic, obs, noise (B, H, A), offsets (N-1, B, H, A)) -> ((B, H, A), q (N, B))``:
    candidate 0 is the reference's chunk from ``noise``, the others that chunk plus each offset."""

    def fn(reference_params, critic_params, obs, noise, offsets):
        base = agent.sample_actions(reference_params, obs, noise)
        chunks = jnp.concatenate([base[None], base[None] + offsets], axis=0)
        q = jax.vmap(lambda a: jnp.mean(agent.critic.apply(critic_params, obs, a), axis=0))(chunks)
        return select_by_q(chunks, q), q

    return jax.jit(fn)


def _check(what: str, n: int, noise_scale: float, candidates: str) -> None:
    if n < 1 or noise_scale < 0:
        raise ValueError(f"{what} needs n >= 1 and noise_scale >= 0, got n={n}, noise_scale={noise_scale}")
    if candidates not in CANDIDATES:
        raise ValueError(f"candidates must be one of {CANDIDATES}, got {candidates!r}")


def _offsets(rng: np.random.Generator, count: int, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """``(count, B, H, A)`` smooth offsets, one per candidate and row."""
    batch, horizon, dim = shape
    return smooth_offsets(rng, (count * batch, horizon, dim), scale).reshape(count, *shape)


def best_of_n_policy(
    agent: Any,
    reference_params: Any,
    critic_params: Any,
    n: int,
    noise_scale: float,
    seed: int = 0,
    candidates: str = "flow",
) -> PolicyFn:
    """A :data:`~lwd_learner.rollout.PolicyFn` that executes the best of ``n`` reference chunks by Q."""
    _check("best-of-n", n, noise_scale, candidates)
    rng = np.random.default_rng(seed)

    def policy(obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        if candidates == "offset":
            offsets = _offsets(rng, n - 1, noise.shape, noise_scale).astype(noise.dtype)
            fn = _best_of_offsets_fn(agent)
            chunk, _ = fn(reference_params, critic_params, jnp.asarray(obs), jnp.asarray(noise), jnp.asarray(offsets))
            return np.asarray(chunk)
        extra = noise_scale * rng.standard_normal((n - 1, *noise.shape)).astype(noise.dtype)
        noises = np.concatenate([noise[None], extra], axis=0)
        chunk, _ = _best_of_n_fn(agent)(reference_params, critic_params, jnp.asarray(obs), jnp.asarray(noises))
        return np.asarray(chunk)

    return policy


def random_pick_policy(
    agent: Any, reference_params: Any, n: int, noise_scale: float, seed: int = 0, candidates: str = "flow"
) -> PolicyFn:
    """The control for :func:`best_of_n_policy`: one of the same ``n`` candidates, picked uniformly."""
    _check("random pick", n, noise_scale, candidates)
    rng = np.random.default_rng(seed)

    def policy(obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        keep = (rng.integers(n, size=noise.shape[0]) == 0)[:, None, None]  # candidate 0
        if candidates == "offset":
            base = np.asarray(agent.sample_actions(reference_params, jnp.asarray(obs), jnp.asarray(noise)))
            return np.where(keep, base, base + _offsets(rng, 1, noise.shape, noise_scale)[0].astype(base.dtype))
        drawn = noise_scale * rng.standard_normal(noise.shape).astype(noise.dtype)
        chosen = np.where(keep, noise, drawn)
        return np.asarray(agent.sample_actions(reference_params, jnp.asarray(obs), jnp.asarray(chosen)))

    return policy
