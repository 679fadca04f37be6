"""Imitation baselines on the uniform interface: SFT and HG-DAgger (App. C1).

- :class:`SFTMethod`: flow-matching BC (eq. 34) on every sample of the batch with the SFT
  optimiser; fed demonstrations only, it is the paper's SFT reference policy.
- :class:`HGDAggerMethod`: flow-matching BC, starting from the reference, on human-intervention
  samples and samples from successful episodes (weights in :class:`lwd_learner.config.
  HGDAggerConfig`); autonomous samples of failed episodes get weight 0. It uses the LWD policy
  optimiser, as the paper's post-training baselines do. Batch keys: ``obs``, ``actions``,
  ``intervention`` and ``success`` (``(B,)`` bools).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lwd_learner.agent import make_velocity_field, policy_optimizer, sft_optimizer
from lwd_learner.baselines.base import (
    Batch,
    BCState,
    Metrics,
    Params,
    check_batch,
    init_velocity_params,
    sample_velocity_field,
    weighted_bc_step,
)
from lwd_learner.config import LearnerConfig


class SFTMethod:
    """Flow-matching BC on all samples (the SFT reference / imitation baseline)."""

    name = "sft"
    required_keys: tuple[str, ...] = ("obs", "actions")

    def __init__(self, config: LearnerConfig) -> None:
        self.config = config
        self.velocity = make_velocity_field(config)
        self.tx = sft_optimizer(config)
        self.update_fn = self._update
        self.update = jax.jit(self._update)
        self.sample = jax.jit(self._sample)
        self.init = jax.jit(self._init)

    def _init(self, key: jax.Array, reference_params: Params | None = None) -> BCState:
        """Fresh parameters, or continue from ``reference_params``."""
        params = init_velocity_params(self.velocity, self.config, key) if reference_params is None else reference_params
        return BCState(step=jnp.zeros((), jnp.int32), params=params, opt=self.tx.init(params))

    def _update(self, state: BCState, batch: Batch, key: jax.Array) -> tuple[BCState, Metrics]:
        check_batch(self.name, batch, self.required_keys)
        return weighted_bc_step(self.velocity, self.tx, state, batch["obs"], batch["actions"], None, key)

    def _sample(self, state: BCState, obs: jax.Array, noise: jax.Array) -> jax.Array:
        return sample_velocity_field(self.velocity, state.params, obs, noise, self.config.policy.flow_steps)


class HGDAggerMethod(SFTMethod):
    """Flow-matching BC on interventions + successful-episode samples, from the reference."""

    name = "hg_dagger"
    required_keys = ("obs", "actions", "intervention", "success")

    def __init__(self, config: LearnerConfig) -> None:
        super().__init__(config)
        self.tx = policy_optimizer(config)

    def weights(self, batch: Batch) -> jax.Array:
        """Per-sample BC weights ``(B,)`` (see :class:`lwd_learner.config.HGDAggerConfig`)."""
        cfg = self.config.hg_dagger
        intervention = jnp.asarray(batch["intervention"]).astype(bool)
        success = jnp.asarray(batch["success"]).astype(bool)
        return jnp.where(intervention, cfg.intervention_weight, jnp.where(success, cfg.success_weight, 0.0))

    def _update(self, state: BCState, batch: Batch, key: jax.Array) -> tuple[BCState, Metrics]:
        check_batch(self.name, batch, self.required_keys)
        weights = self.weights(batch)
        new, metrics = weighted_bc_step(self.velocity, self.tx, state, batch["obs"], batch["actions"], weights, key)
        metrics["kept_fraction"] = jnp.mean(weights > 0)
        metrics["intervention_fraction"] = jnp.mean(jnp.asarray(batch["intervention"]).astype(jnp.float32))
        return new, metrics
