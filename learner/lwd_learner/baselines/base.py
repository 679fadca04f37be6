"""The uniform method interface the learning benchmark loops over, and the shared BC pieces.

Every method (LWD and its baselines) is an object with

- ``name: str`` and ``config: LearnerConfig``;
- ``required_keys: tuple[str, ...]``: batch keys its update reads (beyond these, extra keys are
  ignored, so one replay batch can feed every method);
- ``init(key, reference_params=None) -> state`` (jitted): fresh state; post-training methods start their
  policy from the SFT reference ``f_beta`` when ``reference_params`` (a :class:`VelocityField`
  parameter tree) is given, as every post-training method in the paper does (App. C1);
- ``update(state, batch, key) -> (state, metrics)``: one jitted, pure training step;
  ``update_fn`` is the same step un-jitted (for :func:`lwd_learner.parallel.data_parallel`);
- ``sample(state, obs, noise) -> actions``: jitted Euler sampling of ``(B, H, A)`` chunks from
  explicit ``noise``, the policy as it would be deployed.

States are pytrees (``flax.struct.PyTreeNode``), so :mod:`lwd_learner.checkpoint` saves any of
them. The batch is the dict of :mod:`lwd_learner.agent` plus the keys documented per method:
``intervention`` ``(B,)`` bool (the chunk was executed by a human takeover), ``success`` ``(B,)``
bool (the sample's episode ended in success), ``return_to_go`` ``(B,)`` float (RECAP's
Monte-Carlo return) and optionally ``positive`` ``(B,)`` bool (precomputed RECAP labels).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import optax

from lwd_learner import flow
from lwd_learner.config import LearnerConfig
from lwd_learner.networks import VelocityField

Params = Any
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class Method(Protocol):
    """What :data:`lwd_learner.baselines.BASELINES` factories return (see module docstring)."""

    name: str
    config: LearnerConfig
    required_keys: tuple[str, ...]
    update: Callable[[Any, Batch, jax.Array], tuple[Any, Metrics]]
    update_fn: Callable[[Any, Batch, jax.Array], tuple[Any, Metrics]]
    sample: Callable[[Any, jax.Array, jax.Array], jax.Array]

    def init(self, key: jax.Array, reference_params: Params | None = None) -> Any: ...


def check_batch(method: str, batch: Batch, required: tuple[str, ...]) -> None:
    """Raise ``KeyError`` naming the method and every missing batch key (runs at trace time)."""
    missing = [k for k in required if k not in batch]
    if missing:
        raise KeyError(f"{method}: batch is missing {missing}; it has {sorted(batch)}")


class BCState(flax.struct.PyTreeNode):
    """State of a behaviour-cloning method: one velocity field and its optimiser."""

    step: jax.Array
    params: Params
    opt: optax.OptState


def init_velocity_params(velocity: VelocityField, config: LearnerConfig, key: jax.Array) -> Params:
    """Fresh :class:`VelocityField` parameters for ``config.network``."""
    net = config.network
    obs = jnp.zeros((1, net.obs_dim), jnp.float32)
    actions = jnp.zeros((1, net.horizon, net.action_dim), jnp.float32)
    return velocity.init(key, obs, actions, jnp.zeros((1,)))


def sample_velocity_field(
    velocity: VelocityField, params: Params, obs: jax.Array, noise: jax.Array, num_steps: int
) -> jax.Array:
    """Euler-sample chunks from a :class:`VelocityField`, encoding ``obs`` once."""
    z = velocity.apply(params, obs, method=VelocityField.embed)

    def fn(z_: jax.Array, actions: jax.Array, w: jax.Array) -> jax.Array:
        return velocity.apply(params, z_, actions, w, method=VelocityField.velocity)

    return flow.euler_sample(fn, z, noise, num_steps)


def weighted_bc_step(
    velocity: VelocityField,
    tx: optax.GradientTransformation,
    state: BCState,
    obs: jax.Array,
    actions: jax.Array,
    weights: jax.Array | None,
    key: jax.Array,
) -> tuple[BCState, Metrics]:
    """One flow-matching BC step (eq. 34) with optional per-sample weights.

    With ``weights`` the loss is ``sum_i w_i l_i / sum_i w_i``; a batch whose weights are all
    zero leaves the state unchanged (AdamW would otherwise still move the parameters through
    momentum and weight decay on a zero gradient).
    """
    k_noise, k_time = jax.random.split(key)
    noise = jax.random.normal(k_noise, actions.shape, actions.dtype)
    w = flow.sample_flow_times(k_time, actions.shape[0])

    def loss_fn(params: Params) -> jax.Array:
        def fn(o: jax.Array, a: jax.Array, t: jax.Array) -> jax.Array:
            return velocity.apply(params, o, a, t)

        per_sample = flow.per_sample_flow_matching_loss(fn, obs, actions, noise, w)
        if weights is None:
            return jnp.mean(per_sample)
        return jnp.sum(weights * per_sample) / jnp.maximum(jnp.sum(weights), 1e-8)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt = tx.update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    new = BCState(step=state.step + 1, params=params, opt=opt)
    if weights is not None:
        keep = jnp.sum(weights) > 0
        new = jax.tree_util.tree_map(lambda n, o: jnp.where(keep, n, o), new, state)
    return new, {"fm_loss": loss}
