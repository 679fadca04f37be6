"""LWD and the paper's baselines behind one interface, for the learning benchmark.

``BASELINES[name](config)`` builds a method with ``init(key, reference_params=None)``,
``update(state, batch, key) -> (state, metrics)`` (jitted, pure), ``update_fn`` (un-jitted),
``sample(state, obs, noise) -> actions`` and ``required_keys`` (see
:mod:`lwd_learner.baselines.base`). Methods:

- ``sft``: flow-matching BC on the batch (feed demonstrations: the SFT reference policy).
- ``hg_dagger``: BC from the reference on interventions + successful-episode samples.
- ``recap``: advantage-conditioned BC from the reference with a categorical value model.
- ``lwd``: DIVL + QAM (the paper's method).
- ``lwd_expectile``: LWD with the IQL scalar expectile value (Table II).
- ``lwd_constant_tau``: LWD with a constant quantile level ``config.value.tau_base`` (Table III).

A typical loop::

    method = BASELINES["recap"](config)
    state = method.init(jax.random.key(seed), reference_params=sft_state.params)
    for step in range(budget):
        state, metrics = method.update(state, replay.sample(...), jax.random.fold_in(key, step))
    actions = method.sample(state, obs, noise)
"""

from __future__ import annotations

from collections.abc import Callable

from lwd_learner.baselines.base import BCState, Method
from lwd_learner.baselines.bc import HGDAggerMethod, SFTMethod
from lwd_learner.baselines.lwd import LWDConstantTauMethod, LWDExpectileMethod, LWDMethod
from lwd_learner.baselines.recap import RecapMethod, RecapState, advantage_threshold
from lwd_learner.config import LearnerConfig

BASELINES: dict[str, Callable[[LearnerConfig], Method]] = {
    "sft": SFTMethod,
    "hg_dagger": HGDAggerMethod,
    "recap": RecapMethod,
    "lwd": LWDMethod,
    "lwd_expectile": LWDExpectileMethod,
    "lwd_constant_tau": LWDConstantTauMethod,
}


def make_method(name: str, config: LearnerConfig) -> Method:
    """``BASELINES[name](config)`` with a clear error for an unknown name."""
    if name not in BASELINES:
        raise KeyError(f"unknown method {name!r}; known: {sorted(BASELINES)}")
    return BASELINES[name](config)


__all__ = [
    "BASELINES",
    "BCState",
    "HGDAggerMethod",
    "LWDConstantTauMethod",
    "LWDExpectileMethod",
    "LWDMethod",
    "Method",
    "RecapMethod",
    "RecapState",
    "SFTMethod",
    "advantage_threshold",
    "make_method",
]
