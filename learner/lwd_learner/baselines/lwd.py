"""LWD (DIVL + QAM) and its value-learning ablations on the uniform method interface.

A thin adapter over :class:`lwd_learner.agent.LWDAgent`: ``init`` builds the agent state,
puts ``reference_params`` in as the frozen ``f_beta`` and starts ``f_theta`` from it
(:meth:`LWDAgent.start_rl`); ``update`` is the agent's DIVL + QAM step; ``sample`` draws from
``f_theta``. The ablations differ only in the config they force:

- ``lwd_expectile`` (Table II): ``value.value_mode = "expectile"`` (IQL scalar expectile V).
- ``lwd_constant_tau`` (Table III): ``value.tau_mode = "constant"``; the constant is the given
  config's ``value.tau_base``, which the benchmark sets to the adaptive run's
  :meth:`LWDAgent.mean_tau` (the paper's 0.52).
"""

from __future__ import annotations

import dataclasses

import jax

from lwd_learner.agent import LWDAgent, TrainState
from lwd_learner.baselines.base import Batch, Metrics, Params, check_batch
from lwd_learner.config import LearnerConfig


class LWDMethod:
    """DIVL + QAM from a frozen reference (Alg. 2)."""

    name = "lwd"
    required_keys: tuple[str, ...] = ("obs", "actions", "next_obs", "reward", "discount")

    def __init__(self, config: LearnerConfig) -> None:
        self.config = config
        self.agent = LWDAgent(config)
        self.update_fn = self._update
        self.update = jax.jit(self._update)
        self.sample = jax.jit(self._sample)
        self.init = jax.jit(self._init)

    def _init(self, key: jax.Array, reference_params: Params | None = None) -> TrainState:
        state = self.agent.init(key)
        if reference_params is not None:
            state = state.replace(reference_params=reference_params)
        return self.agent.start_rl(state)

    def _update(self, state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
        check_batch(self.name, batch, self.required_keys)
        return self.agent.update_fn(state, dict(batch), key)

    def _sample(self, state: TrainState, obs: jax.Array, noise: jax.Array) -> jax.Array:
        return self.agent.sample_actions(state.policy_params, obs, noise)

    def mean_tau(self, state: TrainState) -> float:
        """Mean bootstrap tau of this run (see :meth:`LWDAgent.mean_tau`)."""
        return self.agent.mean_tau(state)


class LWDExpectileMethod(LWDMethod):
    """Table II ablation: scalar IQL expectile value instead of DIVL, everything else equal."""

    name = "lwd_expectile"

    def __init__(self, config: LearnerConfig) -> None:
        super().__init__(dataclasses.replace(config, value=dataclasses.replace(config.value, value_mode="expectile")))


class LWDConstantTauMethod(LWDMethod):
    """Table III ablation: constant tau = ``config.value.tau_base`` (set it to the adaptive run's mean)."""

    name = "lwd_constant_tau"

    def __init__(self, config: LearnerConfig) -> None:
        super().__init__(dataclasses.replace(config, value=dataclasses.replace(config.value, tau_mode="constant")))
