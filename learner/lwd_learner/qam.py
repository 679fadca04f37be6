"""Q-learning with Adjoint Matching (QAM): policy extraction from the critic (LWD eq. 8-10).

One QAM step for a batch of states:
1. Roll the FROZEN reference flow ``f_beta`` from Gaussian noise with the Euler sampler of
   :mod:`lwd_learner.flow` (``w = 0`` noise, ``w = 1`` data), keeping the grid points ``a_k``.
2. Terminal adjoint ``g_1 = -grad_a Q(s, a_N) / lambda`` (eq. 10).
3. Integrate the adjoint backwards along the reference trajectory with vector-Jacobian products
   of ``f_beta``: ``g_k = g_{k+1} + h * (d f_beta(s, a_k, w_k) / d a_k)^T g_{k+1}``. This is the
   exact discrete adjoint of the Euler map, so ``g_k = d(-Q(s, a_N) / lambda) / d a_k``
   (tested against finite differences).
4. Regress the trained flow ``f_theta`` at every grid point (eq. 9):
   ``mean_k || 2 (f_theta - f_beta)(s, a_k, w_k) / sigma_k + sigma_k g_k ||^2``.
   Trajectory, adjoints and ``f_beta`` values are stop-gradient targets; nothing backpropagates
   through the sampler, only through one ``f_theta`` evaluation per grid point.

Endpoints. ``sigma_w = sqrt(2 (1 - w) w)`` is 0 at ``w = 0`` and ``w = 1``. The regression is
evaluated where the sampler queries the velocity (``w_k = k / N``, k = 0..N-1, so ``w = 1`` never
occurs), and ``sigma_k`` is taken at the midpoint ``w_k + h / 2`` of the Euler interval the
velocity acts over: a midpoint-rule weight for the integral in eq. 9 that is strictly positive
at both ends (``sigma(h/2) = sigma(1 - h/2) > 0``), so no clamping constant is needed.

Sign and convention checks (what was verified, against ColinQiyangLi/qam ``agents/qam.py`` and
Domingo-Enrich et al. 2024, "Adjoint Matching"):
- terminal adjoint: reference code ``adj = -grad_a Q * inv_temp`` with ``inv_temp = 1 / lambda``;
  AM's ``a(1) = -grad r(X_1)`` with reward ``r = Q / lambda``. Same sign as here.
- backward step: reference ``adj = adj + h * vjp(drift)(adj)``, AM's lean adjoint
  ``d a / dt = -a^T grad_x b``. Same sign as here (integrating from w=1 down to w=0).
- loss: reference ``|| (v_fine - v_base) * 2 / sigma + sigma * adj ||^2`` summed over action
  dims. Same form; we average (not sum) over the N steps, a constant factor N.
- optimum: minimising pointwise gives ``f_theta - f_beta = -(sigma^2 / 2) g``, i.e. the policy
  velocity is pushed along ``+grad Q`` (improves Q) and vanishes as ``sigma -> 0``.
- deliberate difference: the reference code and AM use the memoryless SDE of the linear
  interpolant, ``sigma(w) = sqrt(2 (1 - w) / w)`` with drift ``2 f - a / w`` and rollouts of the
  current policy. The LWD paper (eq. 9, Alg. 2) writes ``sigma_w = sqrt(2 (1 - w) w)`` with a
  deterministic reference rollout and adjoint of ``f_beta``; this module implements LWD as
  written. Its fixed point is ``f_theta = f_beta + (1 - w) w grad_{a^w} Q(s, a^1(a^w)) / lambda``
  on the reference's paths: critic-gradient guidance of the reference flow that keeps samples
  near its support, rather than the exact tilt of eq. 8.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lwd_learner.flow import VelocityFn, euler_trajectory

QFn = Callable[[jax.Array], jax.Array]  # actions (B, H, A) -> Q (B,), the states already bound


class AdjointTargets(NamedTuple):
    """Stop-gradient regression targets of one QAM step.

    states: ``(N, B, H, A)`` reference grid points ``a_k`` (k = 0..N-1).
    times: ``(N,)`` grid times ``w_k = k / N``.
    reference_velocity: ``(N, B, H, A)`` ``f_beta(s, a_k, w_k)``.
    adjoints: ``(N, B, H, A)`` adjoint ``g_k = d(-Q(s, a_N) / lambda) / d a_k`` at each grid point.
    terminal_actions: ``(B, H, A)`` reference sample ``a_N``.
    """

    states: jax.Array
    times: jax.Array
    reference_velocity: jax.Array
    adjoints: jax.Array
    terminal_actions: jax.Array


def sigma(w: jax.Array) -> jax.Array:
    """LWD noise scale ``sigma_w = sqrt(2 (1 - w) w)`` (eq. 9)."""
    return jnp.sqrt(2.0 * (1.0 - w) * w)


def terminal_adjoint(q_fn: QFn, actions: jax.Array, lam: float) -> jax.Array:
    """``g_1 = -grad_a Q(s, a) / lambda`` (eq. 10), per sample; ``(B, H, A)``."""
    grad = jax.grad(lambda a: jnp.sum(q_fn(a)))(actions)
    return -grad / lam


def backward_adjoint(
    velocity_fn: VelocityFn, cond: jax.Array, states: jax.Array, times: jax.Array, g_terminal: jax.Array
) -> jax.Array:
    """Discrete adjoint of the Euler rollout, integrated from ``w = 1`` back to ``w = 0``.

    Args:
        velocity_fn: the frozen reference flow ``f_beta``.
        cond: ``(B, ...)`` conditioning passed to ``velocity_fn`` (observation or its embedding).
        states: ``(N, B, H, A)`` grid points ``a_0..a_{N-1}``.
        times: ``(N,)`` grid times.
        g_terminal: ``(B, H, A)`` adjoint at ``a_N``.

    Returns:
        ``(N, B, H, A)`` adjoints ``g_k = (d a_N / d a_k)^T g_terminal``.
    """
    step = 1.0 / times.shape[0]

    def body(g_next: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        a_k, w_k = inputs
        w = jnp.zeros_like(a_k[:, 0, 0]) + w_k
        _, vjp = jax.vjp(lambda a: velocity_fn(cond, a, w), a_k)
        g_k = g_next + step * vjp(g_next)[0]
        return g_k, g_k

    _, adjoints = jax.lax.scan(body, g_terminal, (states, times), reverse=True)
    return adjoints


def adjoint_targets(
    reference_fn: VelocityFn, q_fn: QFn, cond: jax.Array, noise: jax.Array, num_steps: int, lam: float
) -> AdjointTargets:
    """Reference rollout from ``noise`` plus backward adjoint; everything stop-gradient.

    ``cond`` is what ``reference_fn`` is conditioned on (the observation, or an embedding of it
    computed once per batch); ``q_fn`` maps action chunks to Q with the states already bound.
    """
    path, times = euler_trajectory(reference_fn, cond, noise, num_steps)
    path = jax.lax.stop_gradient(path)
    # Euler: a_{k+1} = a_k + f_beta(a_k, w_k) / N, so the reference velocities come for free.
    reference_velocity = (path[1:] - path[:-1]) * num_steps
    g_terminal = terminal_adjoint(q_fn, path[-1], lam)
    adjoints = backward_adjoint(reference_fn, cond, path[:-1], times, g_terminal)
    return AdjointTargets(
        states=path[:-1],
        times=times,
        reference_velocity=reference_velocity,
        adjoints=jax.lax.stop_gradient(adjoints),
        terminal_actions=path[-1],
    )


def adjoint_matching_loss(
    policy_fn: VelocityFn, cond: jax.Array, targets: AdjointTargets, step_indices: jax.Array | None = None
) -> jax.Array:
    """QAM regression (eq. 9): mean over steps and batch of ``||2 f_delta / sigma + sigma g||^2``.

    ``sigma`` is evaluated at the Euler interval midpoints ``w_k + h / 2`` (see module docstring).
    Only ``policy_fn`` receives gradients.

    Args:
        policy_fn: the trained flow ``f_theta``.
        cond: ``(B, ...)`` conditioning for ``policy_fn``.
        targets: from :func:`adjoint_targets`.
        step_indices: optional ``(M, B)`` grid indices per sample. ``None`` uses all N steps;
            otherwise the mean runs over the given ``M`` draws, an unbiased estimate of the
            all-step mean when they are uniform, at ``M / N`` of the policy forward/backward cost.
    """
    num_steps, batch = targets.times.shape[0], targets.states.shape[1]
    if step_indices is None:
        step_indices = jnp.broadcast_to(jnp.arange(num_steps)[:, None], (num_steps, batch))

    def gather(x: jax.Array) -> jax.Array:
        idx = step_indices.reshape(step_indices.shape + (1,) * (x.ndim - 2))
        return jnp.take_along_axis(x, idx, axis=0)

    states, ref_v, adjoints = gather(targets.states), gather(targets.reference_velocity), gather(targets.adjoints)
    times = targets.times[step_indices]  # (M, B)
    policy_velocity = jax.vmap(lambda a, w: policy_fn(cond, a, w))(states, times)
    sig = sigma(times + 0.5 / num_steps).reshape(times.shape + (1,) * (states.ndim - 2))
    residual = 2.0 * (policy_velocity - ref_v) / sig + sig * adjoints
    per_sample = jnp.sum(jnp.square(residual), axis=tuple(range(2, residual.ndim)))  # (M, B)
    return jnp.mean(per_sample)
