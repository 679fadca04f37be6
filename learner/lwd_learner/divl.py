"""Distributional Implicit Value Learning (DIVL): the value-side maths, as pure JAX functions.

Paper map (LWD, arXiv 2605.00416): C51 projection and cross entropy (App. A1, eq. 21),
discrete quantile (eq. 13/23), normalised entropy (eq. 17/24), adaptive tau (eq. 18), n-step
chunk-level TD target (eq. 19) and the IQL expectile loss used by the scalar baseline (eq. 4/16).

Shapes use ``K`` for the number of atoms and ``B`` for the batch; ``...`` means any leading
batch shape. The categorical support is a uniformly spaced 1-D array of atoms (defaults: K=201
atoms on [-0.1, 1.1], App. A1). Nothing here holds state or draws random numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NUM_ATOMS = 201
V_MIN = -0.1
V_MAX = 1.1
_SNAP = 1e-4  # atom widths


def make_atoms(num_atoms: int = NUM_ATOMS, v_min: float = V_MIN, v_max: float = V_MAX) -> jax.Array:
    """Uniform categorical support ``(K,)``; every function below assumes uniform spacing."""
    return jnp.linspace(v_min, v_max, num_atoms, dtype=jnp.float32)


def c51_project(values: jax.Array, atoms: jax.Array) -> jax.Array:
    """Project scalar targets onto the categorical support (C51, App. A1).

    Each value is clipped to ``[atoms[0], atoms[-1]]`` and its unit mass split linearly between
    the two neighbouring atoms, so the projection keeps total mass 1 and, for in-support values,
    the mean. A value exactly on an atom puts all its mass there.

    Args:
        values: ``(...)`` scalar targets, e.g. min-Q of the EMA critic on replay actions.
        atoms: ``(K,)`` uniformly spaced support.

    Returns:
        ``(..., K)`` target probabilities.
    """
    num_atoms = atoms.shape[0]
    delta = (atoms[-1] - atoms[0]) / (num_atoms - 1)  # more accurate in float32 than atoms[1] - atoms[0]
    clipped = jnp.clip(values, atoms[0], atoms[-1])
    position = jnp.clip((clipped - atoms[0]) / delta, 0, num_atoms - 1)  # fractional atom index
    # Snap float round-off (|err| ~ 1e-5 atom widths in float32) so on-atom values stay exact.
    nearest = jnp.round(position)
    position = jnp.where(jnp.abs(position - nearest) < _SNAP, nearest, position)
    lower = jnp.floor(position)
    upper_weight = position - lower  # 0 when the value sits on an atom
    lower_idx = lower.astype(jnp.int32)
    upper_idx = jnp.minimum(lower_idx + 1, num_atoms - 1)
    lower_mass = jax.nn.one_hot(lower_idx, num_atoms, dtype=values.dtype) * (1.0 - upper_weight)[..., None]
    upper_mass = jax.nn.one_hot(upper_idx, num_atoms, dtype=values.dtype) * upper_weight[..., None]
    return lower_mass + upper_mass


def categorical_cross_entropy(logits: jax.Array, target_probs: jax.Array) -> jax.Array:
    """Per-sample cross entropy ``-sum_i m_i log softmax(logits)_i`` (eq. 21); ``(..., K) -> (...)``."""
    return -jnp.sum(target_probs * jax.nn.log_softmax(logits, axis=-1), axis=-1)


def quantile(probs: jax.Array, atoms: jax.Array, tau: jax.Array | float) -> jax.Array:
    """Discrete tau-quantile: the first atom whose CDF reaches ``tau`` (eq. 23).

    Counting atoms with ``CDF < tau`` gives that index because the CDF is non-decreasing; the
    index is capped at ``K-1`` so float round-off in the last CDF entry cannot overflow. The
    result is piecewise constant in ``probs``, so it carries no useful gradient and is wrapped
    in ``stop_gradient``: it is only ever used as a bootstrap target.

    Args:
        probs: ``(..., K)`` categorical probabilities.
        atoms: ``(K,)`` support.
        tau: scalar or ``(...)`` per-sample level in (0, 1).

    Returns:
        ``(...)`` quantile values (atoms).
    """
    cdf = jnp.cumsum(probs, axis=-1)
    tau = jnp.asarray(tau, dtype=cdf.dtype)[..., None]
    index = jnp.minimum(jnp.sum(cdf < tau, axis=-1), atoms.shape[0] - 1)
    return jax.lax.stop_gradient(atoms[index])


def normalized_entropy(probs: jax.Array) -> jax.Array:
    """Shannon entropy divided by ``log K``: 0 for a one-hot, 1 for uniform (eq. 24); ``(..., K) -> (...)``."""
    num_atoms = probs.shape[-1]
    entropy = -jnp.sum(jax.scipy.special.xlogy(probs, probs), axis=-1)
    return entropy / jnp.log(num_atoms)


def adaptive_tau(probs: jax.Array, tau_base: float, alpha: float, tau_min: float, tau_max: float) -> jax.Array:
    """Entropy-adaptive quantile level ``clip(tau_base - alpha * H(p), tau_min, tau_max)`` (eq. 18).

    Diffuse value distributions (high entropy) get a lower, more conservative level. The level
    is a stop-gradient quantity (Sec. IV-A). ``(..., K) -> (...)``.
    """
    tau = jnp.clip(tau_base - alpha * normalized_entropy(probs), tau_min, tau_max)
    return jax.lax.stop_gradient(tau)


def nstep_returns(
    chunk_rewards: jax.Array, terminals: jax.Array, valid: jax.Array, gamma_chunk: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Discounted n-step chunk returns and bootstrap discounts for eq. 19.

    Window position ``i`` is chunk ``t + iH``. The window is cut after the first chunk that is
    terminal (success/failure: no bootstrap) and before the first invalid chunk (the episode's
    recording ended without a terminal, e.g. time limit or a window running past the end:
    bootstrap from the last state reached). With ``k`` the number of chunks summed:

        reward   = sum_{i<k} gamma_chunk**i * r_{t+iH}
        discount = 0                  if chunk ``k-1`` is terminal
                 = gamma_chunk**k     otherwise (bootstrap from s_{t+kH})

    where ``gamma_chunk = gamma**H``. Position 0 must be valid. The caller takes the bootstrap
    state ``s_{t+kH}`` using the returned ``k``.

    Args:
        chunk_rewards: ``(B, n)`` per-chunk rewards (eq. 2: already discounted within a chunk).
        terminals: ``(B, n)`` true where the episode terminates at the end of that chunk.
        valid: ``(B, n)`` true where the chunk exists in the episode.
        gamma_chunk: per-chunk discount ``gamma**H``.

    Returns:
        ``reward (B,)``, ``discount (B,)`` and ``k (B,)`` int32 in ``[1, n]``.
    """
    n = chunk_rewards.shape[-1]
    valid = valid.astype(bool)
    terminals = terminals.astype(bool) & valid
    # A chunk is used if it is valid and no earlier chunk in the window was terminal or invalid.
    term_int = terminals.astype(jnp.int32)
    ended_before = jnp.cumsum(term_int, axis=-1) - term_int  # terminals strictly before i
    used = (jnp.cumprod(valid.astype(jnp.int32), axis=-1) > 0) & (ended_before == 0)
    powers = gamma_chunk ** jnp.arange(n, dtype=chunk_rewards.dtype)
    reward = jnp.sum(jnp.where(used, chunk_rewards * powers, 0.0), axis=-1)
    steps = jnp.sum(used, axis=-1).astype(jnp.int32)
    hit_terminal = jnp.any(used & terminals, axis=-1)
    discount = jnp.where(hit_terminal, 0.0, gamma_chunk ** steps.astype(chunk_rewards.dtype))
    return reward, discount, steps


def nstep_targets(
    chunk_rewards: jax.Array,
    terminals: jax.Array,
    valid: jax.Array,
    bootstrap_values: jax.Array,
    gamma_chunk: float,
) -> jax.Array:
    """Critic TD target ``y_Q`` of eq. 19 from per-chunk arrays.

    Args:
        chunk_rewards, terminals, valid: ``(B, n)`` as in :func:`nstep_returns`.
        bootstrap_values: ``(B, n + 1)`` value statistic of every window state ``s_{t+iH}``
            (e.g. the adaptive-tau quantile of V); entry ``k`` from :func:`nstep_returns` is used.
        gamma_chunk: ``gamma**H``.

    Returns:
        ``(B,)`` targets; no bootstrap term past a terminal.
    """
    reward, discount, steps = nstep_returns(chunk_rewards, terminals, valid, gamma_chunk)
    bootstrap = jnp.take_along_axis(bootstrap_values, steps[:, None], axis=-1)[:, 0]
    return td_target(reward, discount, bootstrap)


def td_target(reward: jax.Array, discount: jax.Array, bootstrap_value: jax.Array) -> jax.Array:
    """``reward + discount * bootstrap`` with the bootstrap held fixed (stop-gradient); all ``(B,)``."""
    return reward + discount * jax.lax.stop_gradient(bootstrap_value)


def expectile_loss(diff: jax.Array, tau: jax.Array | float) -> jax.Array:
    """IQL expectile loss ``|tau - 1(u < 0)| u**2`` with ``u = target - prediction`` (eq. 4, eq. 16 p=2).

    Elementwise; the caller averages. Used by the scalar-V baseline (``value_mode="expectile"``).
    """
    weight = jnp.abs(tau - (diff < 0).astype(diff.dtype))
    return weight * jnp.square(diff)
