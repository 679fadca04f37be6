"""RECAP-style baseline (LWD App. C1, after pi*0.6): advantage-conditioned flow-matching BC.

Per update, on one replay batch:

1. Value model ``V`` (the LWD value head: K categorical atoms on [v_min, v_max], no critic)
   fitted by cross entropy to the C51 projection of a scalar target: the Monte-Carlo
   return-to-go (``value_target="mc"``, RECAP's choice; batch key ``return_to_go``) or the
   one-chunk TD target ``reward + discount * E[V_target(next_obs)]`` (``"td"``; EMA target).
2. Lookahead advantage (eq. 35) with the updated ``V`` and its expectation ``E[V]``:
   ``A = reward + discount * E[V(next_obs)] - E[V(obs)]``. With 1-step chunk batches
   (``n_step = 1``) ``reward`` is the chunk's return and ``discount`` is 0 past a terminal, so
   this is eq. 35 with the paper's gamma = 0.9999 kept.
3. Binary label (eq. 36): ``I = (A > eps) or intervention``. ``eps`` is the global threshold
   that makes ``positive_fraction`` (30%) of transitions positive: here an EMA of per-batch
   ``(1 - positive_fraction)`` quantiles (set from the first batch). For the paper's exact
   two-phase recipe, compute :meth:`RecapMethod.advantages` over the whole dataset, take
   :func:`advantage_threshold`, and pass the labels as batch key ``positive``: they then
   override the online labels.
4. Policy: flow-matching BC on every sample, conditioned on the indicator (positive /
   negative), with the indicator replaced by "none" with probability ``label_dropout``. The
   network is :class:`lwd_learner.networks.IndicatorConditionedVelocityField`, whose ``base``
   is the unchanged LWD velocity field started from the SFT reference.

Inference (:meth:`RecapMethod.sample`) conditions on "positive"; with ``cfg_weight != 1`` it
uses classifier-free guidance ``v_none + w (v_positive - v_none)``.

Batch keys: ``obs``, ``actions``, ``next_obs``, ``reward``, ``discount``, ``intervention``,
plus ``return_to_go`` for ``value_target="mc"`` and optionally ``positive``.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lwd_learner import divl, flow
from lwd_learner.agent import policy_optimizer, value_optimizer
from lwd_learner.baselines.base import Batch, Metrics, Params, check_batch
from lwd_learner.config import LearnerConfig
from lwd_learner.networks import (
    INDICATOR_NEGATIVE,
    INDICATOR_NULL,
    INDICATOR_POSITIVE,
    IndicatorConditionedVelocityField,
    ValueNet,
)


class RecapState(flax.struct.PyTreeNode):
    """Conditioned policy, categorical value model (+ EMA target) and the advantage threshold."""

    step: jax.Array
    policy_params: Params
    policy_opt: optax.OptState
    value_params: Params
    target_value_params: Params
    value_opt: optax.OptState
    threshold: jax.Array  # running global advantage threshold eps


def advantage_threshold(advantages: np.ndarray | jax.Array, positive_fraction: float) -> float:
    """Global threshold ``eps`` with a ``positive_fraction`` share of ``advantages`` above it (App. C1)."""
    values = np.asarray(advantages, np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("advantage_threshold: no advantages given")
    return float(np.quantile(values, 1.0 - positive_fraction))


class RecapMethod:
    """RECAP on the uniform method interface (see module docstring)."""

    name = "recap"

    def __init__(self, config: LearnerConfig) -> None:
        self.config = config
        net = config.network
        self.policy = IndicatorConditionedVelocityField(
            horizon=net.horizon,
            action_dim=net.action_dim,
            hidden_dims=net.policy_hidden,
            obs_hidden_dims=net.obs_hidden,
            obs_embed_dim=net.obs_embed_dim,
            time_dim=net.time_dim,
            conditioning=net.policy_conditioning,
        )
        self.value = ValueNet(
            num_outputs=config.value.num_atoms,
            hidden_dims=net.value_hidden,
            obs_hidden_dims=net.obs_hidden,
            obs_embed_dim=net.obs_embed_dim,
        )
        self.atoms = divl.make_atoms(config.value.num_atoms, config.value.v_min, config.value.v_max)
        self.policy_tx = policy_optimizer(config)
        self.value_tx = value_optimizer(config)
        keys = ["obs", "actions", "next_obs", "reward", "discount", "intervention"]
        if config.recap.value_target == "mc":
            keys.append("return_to_go")
        self.required_keys: tuple[str, ...] = tuple(keys)
        self.update_fn = self._update
        self.update = jax.jit(self._update)
        self.sample = jax.jit(self._sample)
        self.advantages = jax.jit(self._advantages)
        self.init = jax.jit(self._init)

    # ------------------------------------------------------------------ setup

    def _init(self, key: jax.Array, reference_params: Params | None = None) -> RecapState:
        """Fresh state; the policy's ``base`` is ``reference_params`` when given, indicator embedding 0."""
        net = self.config.network
        k_policy, k_value = jax.random.split(key)
        obs = jnp.zeros((1, net.obs_dim), jnp.float32)
        actions = jnp.zeros((1, net.horizon, net.action_dim), jnp.float32)
        policy = self.policy.init(k_policy, obs, actions, jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))
        if reference_params is not None:
            policy = IndicatorConditionedVelocityField.from_base_params(reference_params, policy)
        value = self.value.init(k_value, obs)
        return RecapState(
            step=jnp.zeros((), jnp.int32),
            policy_params=policy,
            policy_opt=self.policy_tx.init(policy),
            value_params=value,
            target_value_params=value,
            value_opt=self.value_tx.init(value),
            threshold=jnp.zeros((), jnp.float32),
        )

    # ------------------------------------------------------------------ pieces

    def _expected_value(self, value_params: Params, obs: jax.Array) -> jax.Array:
        """``E[V(obs)]`` under the categorical value distribution; ``(B,)``."""
        probs = jax.nn.softmax(self.value.apply(value_params, obs), axis=-1)
        return probs @ self.atoms

    def _advantages(self, state: RecapState, batch: Batch) -> jax.Array:
        """Lookahead advantage of eq. 35 under the state's value model; ``(B,)``."""
        return self._advantage_from(state.value_params, batch)

    def _advantage_from(self, value_params: Params, batch: Batch) -> jax.Array:
        next_v = self._expected_value(value_params, batch["next_obs"])
        adv = batch["reward"] + batch["discount"] * next_v - self._expected_value(value_params, batch["obs"])
        return jax.lax.stop_gradient(adv)

    def _value_target(self, state: RecapState, batch: Batch) -> jax.Array:
        if self.config.recap.value_target == "mc":
            return batch["return_to_go"]
        bootstrap = self._expected_value(state.target_value_params, batch["next_obs"])
        return divl.td_target(batch["reward"], batch["discount"], bootstrap)

    def labels(self, state: RecapState, batch: Batch, advantages: jax.Array, threshold: jax.Array) -> jax.Array:
        """Binary improvement labels ``I_t`` (eq. 36) as bools ``(B,)``; batch ``positive`` wins if present."""
        if "positive" in batch:
            return jnp.asarray(batch["positive"]).astype(bool)
        positive = advantages > threshold
        if self.config.recap.intervention_positive:
            positive = positive | jnp.asarray(batch["intervention"]).astype(bool)
        return positive

    # ------------------------------------------------------------------ steps

    def _update(self, state: RecapState, batch: Batch, key: jax.Array) -> tuple[RecapState, Metrics]:
        check_batch(self.name, batch, self.required_keys)
        cfg = self.config.recap
        obs, actions = batch["obs"], batch["actions"]

        # 1. value model: cross entropy to the C51 projection of the scalar target.
        target = jax.lax.stop_gradient(self._value_target(state, batch))

        def value_loss(params: Params) -> jax.Array:
            logits = self.value.apply(params, obs)
            return jnp.mean(divl.categorical_cross_entropy(logits, divl.c51_project(target, self.atoms)))

        v_loss, v_grads = jax.value_and_grad(value_loss)(state.value_params)
        v_updates, value_opt = self.value_tx.update(v_grads, state.value_opt, state.value_params)
        value_params = optax.apply_updates(state.value_params, v_updates)
        target_value_params = optax.incremental_update(
            value_params, state.target_value_params, self.config.value.ema_rate
        )

        # 2-3. advantages, running threshold, labels.
        advantages = self._advantage_from(value_params, batch)
        batch_eps = jnp.quantile(advantages, 1.0 - cfg.positive_fraction)
        threshold = jnp.where(
            state.step == 0, batch_eps, (1.0 - cfg.threshold_ema) * state.threshold + cfg.threshold_ema * batch_eps
        )
        positive = self.labels(state, batch, advantages, threshold)

        # 4. indicator-conditioned flow-matching BC with label dropout.
        k_drop, k_noise, k_time = jax.random.split(key, 3)
        indicator = jnp.where(positive, INDICATOR_POSITIVE, INDICATOR_NEGATIVE)
        dropped = jax.random.uniform(k_drop, indicator.shape) < cfg.label_dropout
        indicator = jnp.where(dropped, INDICATOR_NULL, indicator).astype(jnp.int32)
        noise = jax.random.normal(k_noise, actions.shape, actions.dtype)
        w = flow.sample_flow_times(k_time, actions.shape[0])

        def policy_loss(params: Params) -> jax.Array:
            def fn(o: jax.Array, a: jax.Array, t: jax.Array) -> jax.Array:
                return self.policy.apply(params, o, a, t, indicator)

            return flow.flow_matching_loss(fn, obs, actions, noise, w)

        fm_loss, pi_grads = jax.value_and_grad(policy_loss)(state.policy_params)
        pi_updates, policy_opt = self.policy_tx.update(pi_grads, state.policy_opt, state.policy_params)
        policy_params = optax.apply_updates(state.policy_params, pi_updates)
        train_policy = state.step >= cfg.value_warmup_steps

        def pick(new: Params, old: Params) -> Params:
            return jax.tree_util.tree_map(lambda n, o: jnp.where(train_policy, n, o), new, old)

        new_state = RecapState(
            step=state.step + 1,
            policy_params=pick(policy_params, state.policy_params),
            policy_opt=pick(policy_opt, state.policy_opt),
            value_params=value_params,
            target_value_params=target_value_params,
            value_opt=value_opt,
            threshold=threshold,
        )
        metrics = {
            "v_loss": v_loss,
            "fm_loss": fm_loss,
            "value_target_mean": jnp.mean(target),
            "advantage_mean": jnp.mean(advantages),
            "threshold": threshold,
            "positive_fraction": jnp.mean(positive.astype(jnp.float32)),
            "policy_trained": train_policy.astype(jnp.float32),
        }
        return new_state, metrics

    def _sample(self, state: RecapState, obs: jax.Array, noise: jax.Array) -> jax.Array:
        """Chunks conditioned on "positive" (CFG when ``cfg_weight != 1``), from explicit ``noise``."""
        params, guidance = state.policy_params, self.config.recap.cfg_weight
        batch = obs.shape[0]
        positive = jnp.full((batch,), INDICATOR_POSITIVE, jnp.int32)
        z_pos = self.policy.apply(params, obs, positive, method=IndicatorConditionedVelocityField.embed)

        def velocity(z: jax.Array, a: jax.Array, w: jax.Array) -> jax.Array:
            return self.policy.apply(params, z, a, w, method=IndicatorConditionedVelocityField.velocity)

        if guidance == 1.0:
            return flow.euler_sample(velocity, z_pos, noise, self.config.policy.flow_steps)
        none = jnp.full((batch,), INDICATOR_NULL, jnp.int32)
        z_none = self.policy.apply(params, obs, none, method=IndicatorConditionedVelocityField.embed)

        def guided(z_pair: tuple[jax.Array, jax.Array], a: jax.Array, w: jax.Array) -> jax.Array:
            v_pos, v_none = velocity(z_pair[0], a, w), velocity(z_pair[1], a, w)
            return v_none + guidance * (v_pos - v_none)

        return flow.euler_sample(guided, (z_pos, z_none), noise, self.config.policy.flow_steps)
