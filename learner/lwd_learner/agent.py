"""The LWD learner step: DIVL value learning + QAM policy extraction (paper Alg. 2), and SFT.

Batch format (a dict of arrays, one row per replay sample ``t``):

- ``obs``      ``(B, obs_dim)`` state ``s_t``.
- ``actions``  ``(B, H, A)`` executed action chunk ``a_t``.
- ``next_obs`` ``(B, obs_dim)`` bootstrap state ``s_{t+kH}`` (k chunks later; k = n unless the
  window was cut, see :func:`lwd_learner.divl.nstep_returns`).
- ``reward``   ``(B,)`` ``sum_{i<k} gamma^{iH} r_{t+iH}``, the discounted n-step chunk return.
- ``discount`` ``(B,)`` ``gamma^{kH}``, or exactly 0 when the episode terminated inside the
  window (no bootstrap past a terminal).

so the critic target is ``reward + discount * Quant_tau(V(next_obs))`` (eq. 19). ``sft_update``
only needs ``obs`` and ``actions``.

Parameter roles: ``reference_params`` is ``f_beta`` (trained by ``sft_update``, then frozen);
``policy_params`` is ``f_theta`` (starts as a copy of ``f_beta`` via :meth:`LWDAgent.start_rl`,
trained by QAM); ``critic_params`` / ``target_critic_params`` are ``Q_phi`` / ``Q_phi_bar``;
``value_params`` is ``V_psi``. The paper keeps no separate target for V (Alg. 2 bootstraps from
``V_psi``), and neither do we.

``PolicyConfig.noise_schedule`` picks the QAM targets (:mod:`lwd_learner.qam`): ``"lwd"``
(default, eq. 9 as written) or ``"memoryless"`` (Adjoint Matching's schedule). ``TrainState``
also accumulates the bootstrap tau of every RL update (:meth:`LWDAgent.mean_tau`), the constant
of the Table III ablation. The baselines and LWD share one interface in :mod:`lwd_learner.baselines`.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from lwd_learner import divl, flow, qam
from lwd_learner.config import LearnerConfig
from lwd_learner.networks import Critic, ValueNet, VelocityField

Params = Any
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(flax.struct.PyTreeNode):
    """All learner parameters and optimiser states; a pytree, so it passes through ``jax.jit``."""

    step: jax.Array
    policy_params: Params
    reference_params: Params
    critic_params: Params
    target_critic_params: Params
    value_params: Params
    policy_opt: optax.OptState
    critic_opt: optax.OptState
    value_opt: optax.OptState
    sft_opt: optax.OptState
    # Running sum / count of the per-update mean bootstrap tau since :meth:`LWDAgent.start_rl`:
    # the constant-tau ablation (Table III) uses the adaptive run's mean, see ``LWDAgent.mean_tau``.
    tau_sum: jax.Array
    tau_count: jax.Array


def _cosine(lr: float, steps: int, final_fraction: float) -> optax.Schedule:
    return optax.cosine_decay_schedule(lr, decay_steps=steps, alpha=final_fraction)


def policy_optimizer(config: LearnerConfig) -> optax.GradientTransformation:
    """AdamW + cosine + clipping of the RL policy ``f_theta``; the post-training baselines use it too (App. C1)."""
    opt = config.optim
    return optax.chain(
        optax.clip_by_global_norm(opt.policy_grad_clip),
        optax.adamw(
            _cosine(opt.policy_lr, opt.decay_steps, opt.final_lr_fraction), weight_decay=opt.policy_weight_decay
        ),
    )


def sft_optimizer(config: LearnerConfig) -> optax.GradientTransformation:
    """Optimiser of the SFT reference ``f_beta`` (same form as the policy's, SFT learning rate)."""
    opt = config.optim
    return optax.chain(
        optax.clip_by_global_norm(opt.policy_grad_clip),
        optax.adamw(_cosine(opt.sft_lr, opt.decay_steps, opt.final_lr_fraction), weight_decay=opt.policy_weight_decay),
    )


def value_optimizer(config: LearnerConfig) -> optax.GradientTransformation:
    """Adam + cosine + clipping of the value model ``V_psi`` (also RECAP's value model)."""
    opt = config.optim
    return optax.chain(
        optax.clip_by_global_norm(opt.critic_grad_clip),
        optax.adam(_cosine(opt.value_lr, opt.decay_steps, opt.final_lr_fraction)),
    )


def make_velocity_field(config: LearnerConfig) -> VelocityField:
    """The policy / reference velocity field of ``config.network``."""
    net = config.network
    return VelocityField(
        horizon=net.horizon,
        action_dim=net.action_dim,
        hidden_dims=net.policy_hidden,
        obs_hidden_dims=net.obs_hidden,
        obs_embed_dim=net.obs_embed_dim,
        time_dim=net.time_dim,
        conditioning=net.policy_conditioning,
    )


class LWDAgent:
    """Holds networks, optimisers and config; its ``update`` / ``sft_update`` are pure and jitted.

    ``agent.update(state, batch, key) -> (state, metrics)`` and the same for ``sft_update``; both
    are ``jax.jit``-compiled once per agent. Keys are explicit: nothing reads global randomness.
    ``update_fn`` / ``sft_update_fn`` are the same steps un-jitted, for callers that jit with
    their own shardings (:mod:`lwd_learner.parallel`).
    """

    def __init__(self, config: LearnerConfig) -> None:
        self.config = config
        net, opt = config.network, config.optim
        self.velocity = make_velocity_field(config)
        self.critic = Critic(
            hidden_dims=net.critic_hidden,
            obs_hidden_dims=net.obs_hidden,
            obs_embed_dim=net.obs_embed_dim,
            pool_dim=net.pool_dim,
            pool_heads=net.pool_heads,
        )
        self.value = ValueNet(
            num_outputs=config.value.num_atoms if config.value.value_mode == "divl" else 1,
            hidden_dims=net.value_hidden,
            obs_hidden_dims=net.obs_hidden,
            obs_embed_dim=net.obs_embed_dim,
        )
        self.atoms = divl.make_atoms(config.value.num_atoms, config.value.v_min, config.value.v_max)
        steps, frac = opt.decay_steps, opt.final_lr_fraction
        self.critic_tx = optax.chain(
            optax.clip_by_global_norm(opt.critic_grad_clip), optax.adam(_cosine(opt.critic_lr, steps, frac))
        )
        self.value_tx = value_optimizer(config)
        self.policy_tx = policy_optimizer(config)
        self.sft_tx = sft_optimizer(config)
        self.update_fn = self._update
        self.sft_update_fn = self._sft_update
        self.update = jax.jit(self._update)
        self.sft_update = jax.jit(self._sft_update)
        self.extract_update = jax.jit(self._extract_update)
        self.sample_actions = jax.jit(self._sample_actions)

    # ------------------------------------------------------------------ setup

    def init(self, key: jax.Array) -> TrainState:
        """Fresh parameters; the policy and the target critic start as copies of reference / critic."""
        net = self.config.network
        k_vel, k_critic, k_value = jax.random.split(key, 3)
        obs = jnp.zeros((1, net.obs_dim), jnp.float32)
        actions = jnp.zeros((1, net.horizon, net.action_dim), jnp.float32)
        reference = self.velocity.init(k_vel, obs, actions, jnp.zeros((1,)))
        critic = self.critic.init(k_critic, obs, actions)
        value = self.value.init(k_value, obs)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            policy_params=reference,
            reference_params=reference,
            critic_params=critic,
            target_critic_params=critic,
            value_params=value,
            policy_opt=self.policy_tx.init(reference),
            critic_opt=self.critic_tx.init(critic),
            value_opt=self.value_tx.init(value),
            sft_opt=self.sft_tx.init(reference),
            tau_sum=jnp.zeros((), jnp.float32),
            tau_count=jnp.zeros((), jnp.int32),
        )

    def start_rl(self, state: TrainState) -> TrainState:
        """Alg. 1 line 3: freeze the SFT result as ``f_beta`` and start ``f_theta`` from it.

        Also resets the run's tau statistics (:meth:`mean_tau`).
        """
        return state.replace(
            policy_params=state.reference_params,
            policy_opt=self.policy_tx.init(state.reference_params),
            tau_sum=jnp.zeros_like(state.tau_sum),
            tau_count=jnp.zeros_like(state.tau_count),
        )

    @staticmethod
    def mean_tau(state: TrainState) -> float:
        """Mean bootstrap tau over all RL updates since :meth:`start_rl` (NaN before the first).

        Table III's constant-tau baseline sets ``tau_base`` (with ``tau_mode="constant"``) to this
        value read at the end of the adaptive offline run.
        """
        count = int(state.tau_count)
        return float(state.tau_sum) / count if count else float("nan")

    # ------------------------------------------------------------------ pieces

    def _velocity_fn(self, params: Params) -> flow.VelocityFn:
        """``f(obs, a, w)`` with ``params`` bound (encodes ``obs`` at every call; fine for SFT)."""
        return lambda obs, actions, w: self.velocity.apply(params, obs, actions, w)

    def _embedded_velocity_fn(self, params: Params, obs: jax.Array) -> tuple[jax.Array, flow.VelocityFn]:
        """``(z, f(z, a, w))``: encode ``obs`` once and reuse ``z`` at every Euler step / grid point."""
        z = self.velocity.apply(params, obs, method=VelocityField.embed)
        return z, lambda z_, actions, w: self.velocity.apply(params, z_, actions, w, method=VelocityField.velocity)

    def _sample_actions(self, policy_params: Params, obs: jax.Array, noise: jax.Array) -> jax.Array:
        """Euler-sample chunks ``(B, H, A)`` from ``f_theta`` given explicit ``noise (B, H, A)``."""
        z, fn = self._embedded_velocity_fn(policy_params, obs)
        return flow.euler_sample(fn, z, noise, self.config.policy.flow_steps)

    def _value_loss(self, value_params: Params, obs: jax.Array, target_q: jax.Array) -> tuple[jax.Array, Metrics]:
        """DIVL: cross entropy to the C51 projection of min-Q_bar (eq. 12/21); or the expectile baseline."""
        out = self.value.apply(value_params, obs)
        if self.config.value.value_mode == "divl":
            loss = jnp.mean(divl.categorical_cross_entropy(out, divl.c51_project(target_q, self.atoms)))
        else:
            loss = jnp.mean(divl.expectile_loss(target_q - out[:, 0], self.config.value.tau_base))
        return loss, {"v_loss": loss}

    def _bootstrap(self, value_params: Params, next_obs: jax.Array) -> tuple[jax.Array, Metrics]:
        """Bootstrap statistic of V at ``next_obs``: adaptive/constant tau-quantile, or scalar V."""
        cfg = self.config.value
        out = self.value.apply(value_params, next_obs)
        if cfg.value_mode == "expectile":
            return out[:, 0], {"tau_mean": jnp.asarray(cfg.tau_base)}  # no distribution, no entropy
        probs = jax.nn.softmax(out, axis=-1)
        entropy = divl.normalized_entropy(probs)
        if cfg.tau_mode == "adaptive":
            tau = divl.adaptive_tau(probs, cfg.tau_base, cfg.alpha, cfg.tau_min, cfg.tau_max)
        else:
            tau = jnp.full(entropy.shape, cfg.tau_base)
        value = divl.quantile(probs, self.atoms, tau)
        return value, {"tau_mean": jnp.mean(tau), "entropy_mean": jnp.mean(entropy)}

    def _critic_loss(
        self, critic_params: Params, obs: jax.Array, actions: jax.Array, target: jax.Array
    ) -> tuple[jax.Array, Metrics]:
        q = self.critic.apply(critic_params, obs, actions)  # (2, B)
        loss = jnp.mean(jnp.square(q - target[None]))
        return loss, {"q_loss": loss, "q_mean": jnp.mean(q)}

    # ------------------------------------------------------------------ steps

    def _update(self, state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
        """One DIVL + QAM learner update (Alg. 2)."""
        cfg = self.config
        obs, actions = batch["obs"], batch["actions"]

        # 1. V_psi from the EMA critic's min-Q on replay actions (eq. 12).
        target_q = jnp.min(self.critic.apply(state.target_critic_params, obs, actions), axis=0)
        (_, v_metrics), v_grads = jax.value_and_grad(self._value_loss, has_aux=True)(
            state.value_params, obs, jax.lax.stop_gradient(target_q)
        )
        v_updates, value_opt = self.value_tx.update(v_grads, state.value_opt, state.value_params)
        value_params = optax.apply_updates(state.value_params, v_updates)

        # 2. Q_phi towards reward + discount * Quant_tau(V(s')) (eq. 15/19), with the updated V.
        bootstrap, b_metrics = self._bootstrap(value_params, batch["next_obs"])
        y = divl.td_target(batch["reward"], batch["discount"], bootstrap)
        (_, q_metrics), q_grads = jax.value_and_grad(self._critic_loss, has_aux=True)(
            state.critic_params, obs, actions, y
        )
        q_updates, critic_opt = self.critic_tx.update(q_grads, state.critic_opt, state.critic_params)
        critic_params = optax.apply_updates(state.critic_params, q_updates)

        # 3. EMA target critic.
        rate = cfg.value.ema_rate
        target_critic_params = optax.incremental_update(critic_params, state.target_critic_params, rate)

        # 4. QAM against the frozen reference, using the updated critic's action gradient.
        policy_params, policy_opt, pi_metrics = self._policy_step(state, critic_params, obs, key)

        new_state = state.replace(
            step=state.step + 1,
            tau_sum=state.tau_sum + b_metrics["tau_mean"].astype(state.tau_sum.dtype),
            tau_count=state.tau_count + 1,
            policy_params=policy_params,
            critic_params=critic_params,
            target_critic_params=target_critic_params,
            value_params=value_params,
            policy_opt=policy_opt,
            critic_opt=critic_opt,
            value_opt=value_opt,
        )
        metrics = {
            **v_metrics,
            **q_metrics,
            **b_metrics,
            **pi_metrics,
            "td_target_mean": jnp.mean(y),
            "value_target_mean": jnp.mean(target_q),
            "bootstrap_mean": jnp.mean(bootstrap),
        }
        return new_state, metrics

    def _policy_step(
        self, state: TrainState, critic_params: Params, obs: jax.Array, key: jax.Array
    ) -> tuple[Params, optax.OptState, Metrics]:
        """One QAM step of ``f_theta`` against the frozen reference, with ``critic_params``' action gradient.

        The terminal gradient uses the mean of the two Q heads (as the QAM reference code does); the
        pessimistic min is reserved for value targets.
        """
        cfg = self.config
        net = cfg.network

        def q_fn(a: jax.Array) -> jax.Array:
            return jnp.mean(self.critic.apply(critic_params, obs, a), axis=0)

        k_noise, k_steps = jax.random.split(key)
        noise = jax.random.normal(k_noise, (obs.shape[0], net.horizon, net.action_dim), obs.dtype)
        z_ref, reference_fn = self._embedded_velocity_fn(state.reference_params, obs)
        steps, schedule = cfg.policy.flow_steps, cfg.policy.noise_schedule
        if schedule == "lwd":  # eq. 9 as written: deterministic rollout of f_beta
            targets = qam.adjoint_targets(reference_fn, q_fn, z_ref, noise, steps, cfg.policy.lam)
        else:  # memoryless SDE rollout of the current f_theta, lean adjoint of f_beta
            z_pol, current_fn = self._embedded_velocity_fn(jax.lax.stop_gradient(state.policy_params), obs)
            step_noise = jax.random.normal(jax.random.fold_in(key, 1), (steps, *noise.shape), noise.dtype)
            targets = qam.memoryless_adjoint_targets(
                current_fn, reference_fn, q_fn, z_pol, z_ref, noise, step_noise, cfg.policy.lam
            )
        step_indices = None
        if cfg.policy.qam_loss_steps is not None:
            step_indices = jax.random.randint(k_steps, (cfg.policy.qam_loss_steps, obs.shape[0]), 0, steps)

        def policy_loss(params: Params) -> jax.Array:
            z, policy_fn = self._embedded_velocity_fn(params, obs)
            return qam.adjoint_matching_loss(policy_fn, z, targets, step_indices, schedule)

        pi_loss, pi_grads = jax.value_and_grad(policy_loss)(state.policy_params)
        pi_updates, policy_opt = self.policy_tx.update(pi_grads, state.policy_opt, state.policy_params)
        metrics = {
            "qam_loss": pi_loss,
            "adjoint_norm": jnp.mean(jnp.sqrt(jnp.sum(jnp.square(targets.adjoints), axis=(-2, -1)))),
            "policy_grad_norm": optax.tree.norm(pi_grads),
        }
        return optax.apply_updates(state.policy_params, pi_updates), policy_opt, metrics

    def _extract_update(
        self, state: TrainState, critic_params: Params, batch: Batch, key: jax.Array
    ) -> tuple[TrainState, Metrics]:
        """QAM alone against a fixed critic (no value or critic learning): policy extraction from any
        Q-network with the agent's critic architecture, e.g. the probe's Monte-Carlo critic."""
        policy_params, policy_opt, metrics = self._policy_step(state, critic_params, batch["obs"], key)
        return state.replace(step=state.step + 1, policy_params=policy_params, policy_opt=policy_opt), metrics

    def _sft_update(self, state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
        """Flow-matching BC step on the reference ``f_beta`` (eq. 34)."""
        actions = batch["actions"]
        k_noise, k_time = jax.random.split(key)
        noise = jax.random.normal(k_noise, actions.shape, actions.dtype)
        w = flow.sample_flow_times(k_time, actions.shape[0])

        def loss_fn(params: Params) -> jax.Array:
            return flow.flow_matching_loss(self._velocity_fn(params), batch["obs"], actions, noise, w)

        loss, grads = jax.value_and_grad(loss_fn)(state.reference_params)
        updates, sft_opt = self.sft_tx.update(grads, state.sft_opt, state.reference_params)
        reference = optax.apply_updates(state.reference_params, updates)
        return state.replace(step=state.step + 1, reference_params=reference, sft_opt=sft_opt), {"fm_loss": loss}
