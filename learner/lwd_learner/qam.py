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

Memoryless option (``PolicyConfig.noise_schedule = "memoryless"``; default ``"lwd"`` above).
Adjoint Matching's memoryless SDE of the linear interpolant (w = 0 noise), as in the QAM
reference: drift ``b = 2 f - a / w``, noise ``sigma(w) = sqrt(2 (1 - w) / w)``; trajectories
are sampled from the CURRENT policy ``f_theta`` (stop-gradient), the lean adjoint runs with the
reference drift ``b_beta = 2 f_beta - a / w`` along them, and the same regression
``||2 (f_theta - f_beta) / sigma + sigma g||^2`` is fitted, whose fixed point (in continuous
time) is the exact tilt ``pi_beta exp(Q / lambda)`` of eq. 8. Both ``-a/w`` and ``sigma`` blow up at ``w = 0``, so
the SDE is stepped with an exponential integrator (exact in the linear part, ``f`` frozen over
a step; see :func:`memoryless_step`): with ``u = w a``, ``du = 2 w f dw + w sigma dB``, so

    a_{k+1} = (w_k a_k + (w_{k+1}^2 - w_k^2) f_k + s_k eps_k) / w_{k+1},
    s_k^2 = (w_{k+1}^2 - w_k^2) - 2/3 (w_{k+1}^3 - w_k^3),

which is finite at ``w_0 = 0`` (and forgets ``a_0`` there except through ``f``: memoryless).
The adjoint is this map's exact discrete adjoint with ``f = f_beta``:
``g_k = (w_k / w_{k+1}) g_{k+1} + ((w_{k+1}^2 - w_k^2) / w_{k+1}) (d f_beta / d a_k)^T g_{k+1}``
(continuum limit ``dg/dw = -(2 J^T - I / w) g``, AM's lean adjoint). ``sigma`` in the loss is
again taken at the interval midpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

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


NoiseSchedule = Literal["lwd", "memoryless"]


def sigma(w: jax.Array) -> jax.Array:
    """LWD noise scale ``sigma_w = sqrt(2 (1 - w) w)`` (eq. 9)."""
    return jnp.sqrt(2.0 * (1.0 - w) * w)


def memoryless_sigma(w: jax.Array) -> jax.Array:
    """Memoryless noise scale of the linear interpolant ``sqrt(2 (1 - w) / w)`` (Adjoint Matching / QAM)."""
    return jnp.sqrt(2.0 * (1.0 - w) / w)


def schedule_sigma(schedule: NoiseSchedule, w: jax.Array) -> jax.Array:
    """``sigma`` of the named schedule."""
    if schedule == "lwd":
        return sigma(w)
    if schedule == "memoryless":
        return memoryless_sigma(w)
    raise ValueError(f"unknown QAM noise schedule {schedule!r}; use 'lwd' or 'memoryless'")


def memoryless_step(
    actions: jax.Array, velocity: jax.Array, w: jax.Array, w_next: jax.Array, eps: jax.Array
) -> jax.Array:
    """One exponential-integrator step of the memoryless SDE from ``w`` to ``w_next`` (module docstring)."""
    d2 = w_next**2 - w**2
    std = jnp.sqrt(jnp.maximum(d2 - (2.0 / 3.0) * (w_next**3 - w**3), 0.0))
    return (w * actions + d2 * velocity + std * eps) / w_next


def memoryless_trajectory(
    velocity_fn: VelocityFn, cond: jax.Array, noise: jax.Array, step_noise: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Memoryless-SDE rollout of ``velocity_fn`` from ``noise``; ``step_noise (N, B, H, A)`` drives the steps.

    Returns ``states (N + 1, B, H, A)`` and ``times (N,)`` like :func:`lwd_learner.flow.euler_trajectory`.
    """
    num_steps = step_noise.shape[0]
    step = 1.0 / num_steps
    times = jnp.arange(num_steps, dtype=noise.dtype) * step

    def body(actions: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        w_k, eps = inputs
        w = jnp.zeros_like(actions[:, 0, 0]) + w_k
        nxt = memoryless_step(actions, velocity_fn(cond, actions, w), w_k, w_k + step, eps)
        return nxt, nxt

    _, rest = jax.lax.scan(body, noise, (times, step_noise))
    return jnp.concatenate([noise[None], rest], axis=0), times


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


def memoryless_adjoint_targets(
    policy_fn: VelocityFn,
    reference_fn: VelocityFn,
    q_fn: QFn,
    policy_cond: jax.Array,
    reference_cond: jax.Array,
    noise: jax.Array,
    step_noise: jax.Array,
    lam: float,
) -> AdjointTargets:
    """Targets of the memoryless schedule: SDE rollout of the CURRENT policy, lean adjoint of ``f_beta``.

    ``step_noise (N, B, H, A)`` are the standard normal SDE increments (``N`` = flow steps).
    ``reference_velocity`` holds ``f_beta`` at the policy's grid points (the primal of the VJPs).
    """
    path, times = memoryless_trajectory(policy_fn, policy_cond, noise, step_noise)
    path = jax.lax.stop_gradient(path)
    g_terminal = terminal_adjoint(q_fn, path[-1], lam)
    step = 1.0 / times.shape[0]

    def body(g_next: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        a_k, w_k = inputs
        w = jnp.zeros_like(a_k[:, 0, 0]) + w_k
        f_k, vjp = jax.vjp(lambda a: reference_fn(reference_cond, a, w), a_k)
        w_next = w_k + step
        g_k = (w_k / w_next) * g_next + ((w_next**2 - w_k**2) / w_next) * vjp(g_next)[0]
        return g_k, (g_k, f_k)

    _, (adjoints, reference_velocity) = jax.lax.scan(body, g_terminal, (path[:-1], times), reverse=True)
    return AdjointTargets(
        states=path[:-1],
        times=times,
        reference_velocity=jax.lax.stop_gradient(reference_velocity),
        adjoints=jax.lax.stop_gradient(adjoints),
        terminal_actions=path[-1],
    )


def adjoint_matching_loss(
    policy_fn: VelocityFn,
    cond: jax.Array,
    targets: AdjointTargets,
    step_indices: jax.Array | None = None,
    schedule: NoiseSchedule = "lwd",
) -> jax.Array:
    """QAM regression (eq. 9): mean over steps and batch of ``||2 f_delta / sigma + sigma g||^2``.

    ``sigma`` (of ``schedule``) is evaluated at the interval midpoints ``w_k + h / 2`` (see module
    docstring). Only ``policy_fn`` receives gradients.

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
    sig = schedule_sigma(schedule, times + 0.5 / num_steps).reshape(times.shape + (1,) * (states.ndim - 2))
    residual = 2.0 * (policy_velocity - ref_v) / sig + sig * adjoints
    per_sample = jnp.sum(jnp.square(residual), axis=tuple(range(2, residual.ndim)))  # (M, B)
    return jnp.mean(per_sample)
