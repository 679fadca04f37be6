"""RECAP baseline: indicator conditioning, eq. 35/36 labels against numpy, value warm-up, and a toy it must solve."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.learner_batches import TINY_NETWORK, random_batch

from lwd_learner import divl
from lwd_learner.baselines import RecapMethod, advantage_threshold
from lwd_learner.config import LearnerConfig, OptimConfig, PolicyConfig, RecapConfig
from lwd_learner.networks import (
    INDICATOR_NEGATIVE,
    INDICATOR_NULL,
    INDICATOR_POSITIVE,
    IndicatorConditionedVelocityField,
    VelocityField,
)

SMALL = TINY_NETWORK
B = 20


def _config(**overrides: object) -> LearnerConfig:
    return LearnerConfig(network=SMALL, policy=PolicyConfig(flow_steps=2, qam_loss_steps=None), **overrides)


def _batch(key: jax.Array, size: int = B) -> dict[str, jax.Array]:
    return random_batch(key, SMALL, size)


def _leaves_equal(a: object, b: object) -> bool:
    return all(
        bool(jnp.array_equal(x, y))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def test_indicator_conditioning_keeps_the_lwd_field() -> None:
    """Zero-initialised indicator embedding: the conditioned policy IS the reference at start, any label."""
    sizes = {"horizon": SMALL.horizon, "action_dim": SMALL.action_dim, "hidden_dims": (16,), "obs_embed_dim": 8}
    base, cond = VelocityField(**sizes), IndicatorConditionedVelocityField(**sizes)
    obs = jax.random.normal(jax.random.key(0), (5, SMALL.obs_dim))
    a, w = jnp.ones((5, SMALL.horizon, SMALL.action_dim)), jnp.linspace(0, 1, 5)
    base_params = base.init(jax.random.key(1), obs, a, w)
    cond_params = cond.init(jax.random.key(2), obs, a, w, jnp.zeros(5, jnp.int32))
    merged = IndicatorConditionedVelocityField.from_base_params(base_params, cond_params)
    assert jax.tree_util.tree_structure(merged["params"]["base"]) == jax.tree_util.tree_structure(base_params["params"])
    want = base.apply(base_params, obs, a, w)
    for label in (INDICATOR_NULL, INDICATOR_NEGATIVE, INDICATOR_POSITIVE):
        got = cond.apply(merged, obs, a, w, jnp.full(5, label, jnp.int32))
        np.testing.assert_array_equal(got, want)


def test_recap_advantage_threshold_and_labels() -> None:
    """Eq. 35/36 against an independent numpy computation from the value logits."""
    method = RecapMethod(_config())
    batch = dict(_batch(jax.random.key(6)), intervention=jnp.zeros(B, bool))
    state = method.init(jax.random.key(0))
    new, metrics = method.update(state, batch, jax.random.key(7))

    atoms = np.asarray(divl.make_atoms())

    def expected_v(obs: jax.Array) -> np.ndarray:
        logits = np.asarray(method.value.apply(new.value_params, obs), np.float64)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        return (p / p.sum(-1, keepdims=True)) @ atoms

    adv = np.asarray(batch["reward"]) + np.asarray(batch["discount"]) * expected_v(batch["next_obs"])
    adv -= expected_v(batch["obs"])
    np.testing.assert_allclose(method.advantages(new, batch), adv, rtol=1e-4, atol=1e-5)
    eps = np.quantile(adv, 0.7)  # first update: the threshold is the batch quantile
    assert float(metrics["threshold"]) == pytest.approx(eps, rel=1e-4, abs=1e-5)
    assert advantage_threshold(adv, 0.3) == pytest.approx(eps)
    assert float(metrics["positive_fraction"]) == pytest.approx(0.3)  # 6 of 20 strictly above

    forced = dict(batch, intervention=jnp.arange(B) < 4)
    labels = np.asarray(method.labels(new, forced, jnp.asarray(adv), jnp.asarray(eps)))
    np.testing.assert_array_equal(labels, (adv > eps) | (np.arange(B) < 4))
    given = np.arange(B) % 3 == 0
    override = np.asarray(method.labels(new, dict(forced, positive=jnp.asarray(given)), jnp.asarray(adv), 0.0))
    np.testing.assert_array_equal(override, given)


def test_recap_value_warmup_and_td_target() -> None:
    recap_cfg = RecapConfig(value_warmup_steps=2, value_target="td")
    method = RecapMethod(_config(recap=recap_cfg))
    assert "return_to_go" not in method.required_keys
    batch = {k: v for k, v in _batch(jax.random.key(8)).items() if k != "return_to_go"}
    state = method.init(jax.random.key(0))
    s1, m1 = method.update(state, batch, jax.random.key(1))
    s2, _ = method.update(s1, batch, jax.random.key(2))
    s3, m3 = method.update(s2, batch, jax.random.key(3))
    assert _leaves_equal(s2.policy_params, state.policy_params) and float(m1["policy_trained"]) == 0.0
    assert not _leaves_equal(s1.value_params, state.value_params)
    assert not _leaves_equal(s3.policy_params, s2.policy_params) and float(m3["policy_trained"]) == 1.0
    # TD target of the first update: reward + discount * E[V_target(next_obs)] with the initial value.
    probs = jax.nn.softmax(method.value.apply(state.value_params, batch["next_obs"]), axis=-1)
    target = batch["reward"] + batch["discount"] * (probs @ method.atoms)
    assert float(m1["value_target_mean"]) == pytest.approx(float(jnp.mean(target)), rel=1e-5)


def test_recap_positive_conditioning_selects_high_advantage_actions() -> None:
    """One-step bandit: half the data acts +1 (return 1), half -1 (return 0). Conditioning on
    "positive" samples the +1 mode; the unconditional branch (CFG weight 0) stays a mixture."""
    optim = dataclasses.replace(OptimConfig(), policy_lr=3e-3, value_lr=3e-3)
    config = _config(optim=optim, recap=RecapConfig(positive_fraction=0.45))
    method = RecapMethod(config)
    n = 64
    good = jnp.arange(n) % 2 == 0
    ret = good.astype(jnp.float32)
    state = method.init(jax.random.key(0))
    for i in range(300):
        obs = 0.1 * jax.random.normal(jax.random.fold_in(jax.random.key(1), i), (n, SMALL.obs_dim))
        batch = {
            "obs": obs,
            "actions": jnp.where(good[:, None, None], 1.0, -1.0) * jnp.ones((n, SMALL.horizon, SMALL.action_dim)),
            "next_obs": obs,
            "reward": ret,
            "discount": jnp.zeros(n),
            "intervention": jnp.zeros(n, bool),
            "return_to_go": ret,
        }
        state, metrics = method.update(state, batch, jax.random.key(100 + i))
    assert float(metrics["positive_fraction"]) == pytest.approx(0.45, abs=0.1)
    obs, noise = batch["obs"], jax.random.normal(jax.random.key(5), batch["actions"].shape)
    positive = float(jnp.mean(method.sample(state, obs, noise)))
    unconditional = RecapMethod(dataclasses.replace(config, recap=dataclasses.replace(config.recap, cfg_weight=0.0)))
    mixture = float(jnp.mean(unconditional.sample(state, obs, noise)))
    guided = RecapMethod(dataclasses.replace(config, recap=dataclasses.replace(config.recap, cfg_weight=2.0)))
    assert positive > 0.6, positive
    assert abs(mixture) < 0.5 and positive > mixture + 0.4, (positive, mixture)
    assert float(jnp.mean(guided.sample(state, obs, noise))) > 0.6
