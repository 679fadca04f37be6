"""Does the critic rank actions? Q(s, a) measured on a replay batch, for the learning benchmark.

QAM moves the policy along ``grad_a Q`` (eq. 10). A critic that has learned V(s) and ignores the
action chunk, which is easy when the replay's chunk is nearly a function of the state (scripted
demos), hands the reference back unchanged whatever lambda is, or moves it along noise. So the
bench reports, next to the scores, how much the critic's Q depends on the action at all:

- ``action_gap``: mean of ``Q(s, a) - Q(s, a')`` where ``a'`` is the recorded chunk of another row
  of the same batch (a random permutation). 0 for an action-blind critic; positive when Q prefers
  the chunk that was actually executed in that state.
- ``gap_fraction``: share of rows where that difference is strictly positive: about 0.5 when the
  action dependence is noise, exactly 0 when Q ignores the action altogether.
- ``perturbed_gap``: mean of ``Q(s, a) - Q(s, a + delta)``, ``delta`` a smooth perturbation (two
  Gaussian endpoints per action dim, linear in time over the chunk) of ``perturb_scale`` standard
  deviations of the normalised chunk: in-support sensitivity.
- ``grad_norm``: mean ``||grad_a Q(s, a)||`` over the whole chunk: the size of QAM's signal.
- ``q_mean``, ``return_mean`` and ``return_corr``: Q of the recorded chunks against their Monte-Carlo
  return-to-go (how well the critic ranks states).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

QOfStateAction = Callable[[jax.Array, jax.Array], jax.Array]  # (obs (B, D), chunks (B, H, A)) -> (B,)


def smooth_perturbation(key: jax.Array, shape: tuple[int, int, int], scale: float) -> jax.Array:
    """``(B, H, A)`` perturbation linear in time between two ``N(0, scale^2)`` endpoints per row and dim."""
    batch, horizon, dim = shape
    ends = scale * jax.random.normal(key, (batch, 2, dim))
    ramp = jnp.linspace(0.0, 1.0, horizon)[None, :, None]
    return ends[:, :1] * (1.0 - ramp) + ends[:, 1:] * ramp


def smooth_offsets(rng: np.random.Generator, shape: tuple[int, int, int], scale: float) -> np.ndarray:
    """:func:`smooth_perturbation` as a writable numpy array, keyed by one draw from ``rng`` (for the
    numpy-driven policy wrappers: perturbed rollouts, same-state branches, offset candidates)."""
    key = jax.random.key(int(rng.integers(2**31)))
    return np.array(smooth_perturbation(key, shape, scale))


def critic_diagnostics(
    q_fn: QOfStateAction,
    obs: jax.Array,
    actions: jax.Array,
    returns: np.ndarray,
    key: jax.Array,
    perturb_scale: float = 0.3,
) -> dict[str, float]:
    """The module docstring's measures over one batch (``returns`` = Monte-Carlo return-to-go per row)."""
    if obs.shape[0] < 2:
        raise ValueError(f"critic diagnostics need at least 2 rows, got {obs.shape[0]}")
    k_perm, k_delta = jax.random.split(key)
    q = np.asarray(q_fn(obs, actions), np.float64)
    other = actions[jax.random.permutation(k_perm, actions.shape[0])]
    gap = q - np.asarray(q_fn(obs, other), np.float64)
    delta = smooth_perturbation(k_delta, actions.shape, perturb_scale)
    perturbed = q - np.asarray(q_fn(obs, actions + delta), np.float64)
    grad = jax.grad(lambda a: jnp.sum(q_fn(obs, a)))(actions)
    grad_norm = np.asarray(jnp.sqrt(jnp.sum(jnp.square(grad), axis=(-2, -1))), np.float64)
    returns = np.asarray(returns, np.float64)
    varying = q.std() > 0 and returns.std() > 0
    return {
        "action_gap": float(gap.mean()),
        "gap_fraction": float((gap > 0).mean()),
        "perturbed_gap": float(perturbed.mean()),
        "grad_norm": float(grad_norm.mean()),
        "q_mean": float(q.mean()),
        "return_mean": float(returns.mean()),
        "return_corr": float(np.corrcoef(q, returns)[0, 1]) if varying else float("nan"),
    }


@functools.cache
def _mean_q(agent) -> Callable[..., jax.Array]:
    """One jitted ``(params, obs, chunks) -> mean of the two Q heads`` per agent (compiled once per shape)."""
    return jax.jit(lambda params, obs, actions: jnp.mean(agent.critic.apply(params, obs, actions), axis=0))


def agent_q_fn(agent, critic_params) -> QOfStateAction:
    """The mean of an :class:`lwd_learner.agent.LWDAgent`'s two Q heads (what QAM differentiates)."""
    mean_q = _mean_q(agent)
    return lambda obs, actions: mean_q(critic_params, obs, actions)
