"""Flow matching for action chunks: interpolation, BC loss (eq. 34) and the Euler sampler.

Time convention (QAM's and the LWD paper's, eq. 7): ``w = 0`` is noise, ``w = 1`` is data,

    a^w = (1 - w) a^0 + w a^1,    velocity target  a^1 - a^0,

and sampling integrates ``da/dw = f(s, a, w)`` forward from ``w = 0`` to ``w = 1``.
openpi (pi0/pi0.5) uses the OPPOSITE convention (t = 1 noise, t = 0 data, integrating
backwards with velocity ``noise - data``); converting means ``w = 1 - t`` and ``f = -v``.

A velocity function here is any callable ``velocity_fn(obs, actions, w) -> velocity`` with
``obs (B, ...)``, ``actions (B, H, A)``, ``w (B,)`` and output ``(B, H, A)``. Noise is always an
explicit input, never drawn inside the sampler, so the sampler exports to ONNX with noise as a
graph input and repeated calls are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

VelocityFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

DEFAULT_FLOW_STEPS = 10


def interpolate(noise: jax.Array, actions: jax.Array, w: jax.Array) -> jax.Array:
    """``a^w = (1 - w) a^0 + w a^1`` with ``w (B,)`` broadcast over the chunk ``(B, H, A)``."""
    w = w.reshape(w.shape + (1,) * (actions.ndim - w.ndim))
    return (1.0 - w) * noise + w * actions


def per_sample_flow_matching_loss(
    velocity_fn: VelocityFn, obs: jax.Array, actions: jax.Array, noise: jax.Array, w: jax.Array
) -> jax.Array:
    """``||f(s, a^w, w) - (a^1 - a^0)||^2`` per sample, summed over the chunk ``(H, A)``; ``(B,)``.

    The per-sample form lets weighted BC baselines (HG-DAgger, RECAP) reuse the exact SFT loss.
    Arguments as in :func:`flow_matching_loss`.
    """
    a_w = interpolate(noise, actions, w)
    residual = velocity_fn(obs, a_w, w) - (actions - noise)
    return jnp.sum(jnp.square(residual), axis=tuple(range(1, residual.ndim)))


def flow_matching_loss(
    velocity_fn: VelocityFn, obs: jax.Array, actions: jax.Array, noise: jax.Array, w: jax.Array
) -> jax.Array:
    """Flow-matching BC loss (eq. 34): mean over the batch of ``||f(s, a^w, w) - (a^1 - a^0)||^2``.

    The squared norm is summed over the chunk ``(H, A)`` and averaged over the batch.

    Args:
        velocity_fn: the model being trained.
        obs: ``(B, ...)`` observations.
        actions: ``(B, H, A)`` data chunks ``a^1``.
        noise: ``(B, H, A)`` standard normal ``a^0``.
        w: ``(B,)`` flow times in [0, 1].
    """
    return jnp.mean(per_sample_flow_matching_loss(velocity_fn, obs, actions, noise, w))


def sample_flow_times(key: jax.Array, batch: int) -> jax.Array:
    """Uniform ``w ~ U[0, 1)`` of shape ``(B,)`` for :func:`flow_matching_loss`."""
    return jax.random.uniform(key, (batch,))


def euler_sample(
    velocity_fn: VelocityFn, obs: jax.Array, noise: jax.Array, num_steps: int = DEFAULT_FLOW_STEPS
) -> jax.Array:
    """Integrate the flow from ``a^0 = noise`` at ``w = 0`` to ``w = 1`` with fixed Euler steps.

    Step ``k`` evaluates the velocity at ``w_k = k / N`` and moves ``a_{k+1} = a_k + f / N``.
    Written as an unrolled Python loop (``num_steps`` is static) so ONNX exporters see plain ops;
    ``w`` is built as ``zeros_like(a[:, 0, 0]) + w_k`` so a symbolic batch dimension survives.

    Returns:
        ``(B, H, A)`` sampled action chunks.
    """
    step = 1.0 / num_steps
    actions = noise
    for k in range(num_steps):
        w = jnp.zeros_like(actions[:, 0, 0]) + k * step
        actions = actions + step * velocity_fn(obs, actions, w)
    return actions


def euler_trajectory(
    velocity_fn: VelocityFn, obs: jax.Array, noise: jax.Array, num_steps: int = DEFAULT_FLOW_STEPS
) -> tuple[jax.Array, jax.Array]:
    """Same Euler integration as :func:`euler_sample`, keeping every grid point (``lax.scan``).

    Returns:
        ``states (N + 1, B, H, A)`` with ``states[k] = a_{w_k}`` (``states[0]`` is the noise,
        ``states[N]`` the sample) and ``times (N,)`` with ``times[k] = k / N``, the time at which
        step ``k`` evaluates the velocity.
    """
    step = 1.0 / num_steps
    times = jnp.arange(num_steps, dtype=noise.dtype) * step

    def body(actions: jax.Array, w_k: jax.Array) -> tuple[jax.Array, jax.Array]:
        w = jnp.zeros_like(actions[:, 0, 0]) + w_k
        nxt = actions + step * velocity_fn(obs, actions, w)
        return nxt, nxt

    _, rest = jax.lax.scan(body, noise, times)
    return jnp.concatenate([noise[None], rest], axis=0), times
