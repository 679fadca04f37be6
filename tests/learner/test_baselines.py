"""Baselines on the uniform interface: registry, bad inputs, HG-DAgger weighting and learning.

RECAP is in test_baselines_recap.py, the LWD adapter and the IQL expectile check in test_baselines_lwd.py.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.learner_batches import TINY_NETWORK, random_batch

from lwd_learner.baselines import BASELINES, HGDAggerMethod, RecapMethod, SFTMethod, make_method
from lwd_learner.config import LearnerConfig, OptimConfig, PolicyConfig, RecapConfig

SMALL = TINY_NETWORK
B = 20


def _config(**overrides: object) -> LearnerConfig:
    return LearnerConfig(network=SMALL, policy=PolicyConfig(flow_steps=2, qam_loss_steps=None), **overrides)


def _batch(key: jax.Array, size: int = B) -> dict[str, jax.Array]:
    return random_batch(key, SMALL, size)


def _noise(size: int = B) -> jax.Array:
    return jax.random.normal(jax.random.key(77), (size, SMALL.horizon, SMALL.action_dim))


def _leaves_equal(a: object, b: object) -> bool:
    return all(
        bool(jnp.array_equal(x, y))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


@pytest.fixture(scope="module")
def reference() -> dict:
    """A briefly trained SFT reference (non-trivial parameters) shared by the tests."""
    sft = SFTMethod(_config())
    state = sft.init(jax.random.key(0))
    for i in range(3):
        state, _ = sft.update(state, _batch(jax.random.key(10 + i)), jax.random.key(20 + i))
    return state.params


def test_registry_uniform_interface(reference: dict) -> None:
    """Every method: init from the reference samples like the reference; updates are finite; sample shapes."""
    config = _config()
    batch = _batch(jax.random.key(1))
    obs, noise = batch["obs"], _noise()
    sft = SFTMethod(config)
    want = np.asarray(sft.sample(sft.init(jax.random.key(0), reference), obs, noise))
    assert set(BASELINES) == {"sft", "hg_dagger", "recap", "lwd", "lwd_expectile", "lwd_constant_tau"}
    for name in ("sft", "hg_dagger", "recap"):  # "lwd": test_baselines_lwd.py
        method = make_method(name, config)
        assert method.name == name and set(method.required_keys) <= set(batch)
        state = method.init(jax.random.key(3), reference_params=reference)
        np.testing.assert_allclose(method.sample(state, obs, noise), want, atol=1e-6, err_msg=name)
        for i in range(2):
            state, metrics = method.update(state, batch, jax.random.key(30 + i))
        assert all(np.isfinite(float(v)) for v in metrics.values()), (name, metrics)
        chunks = method.sample(state, obs, noise)
        assert chunks.shape == (B, SMALL.horizon, SMALL.action_dim)
        assert not np.allclose(chunks, want, atol=1e-6), f"{name}: update did not change the policy"


def test_ablation_variants_force_their_switch_only() -> None:
    base = _config(value=dataclasses.replace(LearnerConfig().value, tau_base=0.52))
    expectile = BASELINES["lwd_expectile"](base).config
    constant = BASELINES["lwd_constant_tau"](base).config
    assert expectile.value == dataclasses.replace(base.value, value_mode="expectile")
    assert constant.value == dataclasses.replace(base.value, tau_mode="constant")
    assert constant.value.tau_base == 0.52 and expectile.network == base.network


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(KeyError, match="unknown method 'dagger'"):
        make_method("dagger", _config())
    batch = _batch(jax.random.key(1))
    del batch["intervention"]
    method = HGDAggerMethod(_config())
    with pytest.raises(KeyError, match=r"hg_dagger: batch is missing \['intervention'\]"):
        method.update(method.init(jax.random.key(0)), batch, jax.random.key(1))
    recap = RecapMethod(_config())
    no_return = {k: v for k, v in _batch(jax.random.key(1)).items() if k != "return_to_go"}
    with pytest.raises(KeyError, match="return_to_go"):
        recap.update(recap.init(jax.random.key(0)), no_return, jax.random.key(1))
    with pytest.raises(ValueError, match="positive_fraction"):
        RecapConfig(positive_fraction=1.0)


def test_hg_dagger_weights_and_ignored_samples(reference: dict) -> None:
    method = HGDAggerMethod(_config(hg_dagger=dataclasses.replace(LearnerConfig().hg_dagger, intervention_weight=2.0)))
    batch = _batch(jax.random.key(4))
    intervention, success = np.asarray(batch["intervention"]), np.asarray(batch["success"])
    want = np.where(intervention, 2.0, np.where(success, 1.0, 0.0))
    np.testing.assert_array_equal(method.weights(batch), want)
    assert 0 < (want > 0).sum() < B

    state = method.init(jax.random.key(0), reference)
    new, _ = method.update(state, batch, jax.random.key(5))
    # Scrambling the samples HG-DAgger ignores (autonomous, failed) changes nothing ...
    ignored = jnp.asarray(want == 0)
    scrambled = dict(batch)
    scrambled["actions"] = jnp.where(ignored[:, None, None], 5.0 + batch["actions"], batch["actions"])
    scrambled["obs"] = jnp.where(ignored[:, None], -batch["obs"], batch["obs"])
    new_scrambled, _ = method.update(state, scrambled, jax.random.key(5))
    for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(new_scrambled), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # ... while changing a kept sample does, and a batch with nothing to imitate is a no-op.
    kept_changed = dict(batch, actions=jnp.where(ignored[:, None, None], batch["actions"], batch["actions"] + 1.0))
    assert not _leaves_equal(method.update(state, kept_changed, jax.random.key(5))[0].params, new.params)
    nothing = dict(batch, intervention=jnp.zeros(B, bool), success=jnp.zeros(B, bool))
    assert _leaves_equal(method.update(state, nothing, jax.random.key(5))[0], state)


def test_hg_dagger_imitates_only_interventions_and_successes() -> None:
    """Kept samples act +1, failed autonomous ones -1: the trained policy samples near +1."""
    config = _config(optim=dataclasses.replace(OptimConfig(), policy_lr=3e-3))
    method = HGDAggerMethod(config)
    n = 64
    kept = jnp.arange(n) % 2 == 0
    batch = {
        "obs": jnp.zeros((n, SMALL.obs_dim)),
        "actions": jnp.where(kept[:, None, None], 1.0, -1.0) * jnp.ones((n, SMALL.horizon, SMALL.action_dim)),
        "intervention": kept & (jnp.arange(n) % 4 == 0),
        "success": kept & (jnp.arange(n) % 4 == 2),
    }
    state = method.init(jax.random.key(0))
    for i in range(200):
        state, _ = method.update(state, batch, jax.random.key(i))
    samples = method.sample(state, batch["obs"], jax.random.normal(jax.random.key(9), batch["actions"].shape))
    assert float(jnp.mean(samples)) > 0.7
