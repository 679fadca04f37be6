"""Critic diagnostics against critics whose action dependence is known in closed form."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lwd_learner.critic_diagnostics import critic_diagnostics, smooth_perturbation

B, H, A, D = 64, 6, 3, 5


def _batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = jnp.asarray(rng.normal(size=(B, D)), jnp.float32)
    actions = jnp.asarray(rng.normal(size=(B, H, A)), jnp.float32)
    returns = rng.uniform(0, 1, B)
    return obs, actions, returns


def test_an_action_blind_critic_has_no_gap_no_gradient_and_its_state_ranking_is_measured() -> None:
    obs, actions, returns = _batch()
    w = jnp.arange(1.0, D + 1.0)
    out = critic_diagnostics(lambda o, a: o @ w, obs, actions, returns, jax.random.key(0))
    assert out["action_gap"] == 0.0 and out["perturbed_gap"] == 0.0 and out["grad_norm"] == 0.0
    assert out["gap_fraction"] == 0.0  # no row strictly prefers its own chunk
    q = np.asarray(obs, np.float64) @ np.arange(1.0, D + 1.0)
    assert out["return_corr"] == pytest.approx(np.corrcoef(q, returns)[0, 1], abs=1e-6)
    assert out["q_mean"] == pytest.approx(q.mean(), rel=1e-5)
    assert out["return_mean"] == pytest.approx(returns.mean())


def test_a_linear_critic_has_gradient_norm_of_its_weights_and_zero_mean_shuffle_gap() -> None:
    obs, actions, returns = _batch(1)
    w = jnp.asarray(np.random.default_rng(2).normal(size=(H, A)), jnp.float32)
    out = critic_diagnostics(lambda o, a: jnp.sum(a * w, axis=(1, 2)), obs, actions, returns, jax.random.key(1))
    assert out["grad_norm"] == pytest.approx(float(np.linalg.norm(np.asarray(w))), rel=1e-5)
    # A permutation only reorders the rows' chunks: sum_i <w, a_i - a_perm(i)> = 0.
    assert out["action_gap"] == pytest.approx(0.0, abs=1e-5)


def test_a_critic_peaked_at_the_recorded_chunk_prefers_it_over_others_and_over_perturbations() -> None:
    obs, actions, returns = _batch(3)

    def q(o, a):  # highest at each row's own recorded chunk
        return -jnp.sum(jnp.square(a - actions), axis=(1, 2))

    scale = 0.3
    key = jax.random.key(4)
    out = critic_diagnostics(q, obs, actions, returns, key, perturb_scale=scale)
    assert out["gap_fraction"] > 0.95  # every row but a permutation's fixed points
    other = np.asarray(actions)[np.asarray(jax.random.permutation(jax.random.split(key)[0], B))]
    expected_gap = np.mean(np.sum((other - np.asarray(actions)) ** 2, axis=(1, 2)))
    assert out["action_gap"] == pytest.approx(expected_gap, rel=1e-4)
    delta = np.asarray(smooth_perturbation(jax.random.split(key)[1], (B, H, A), scale))
    assert out["perturbed_gap"] == pytest.approx(np.mean(np.sum(delta**2, axis=(1, 2))), rel=1e-4)
    assert out["grad_norm"] == 0.0  # at its maximum


def test_smooth_perturbation_is_linear_in_time_with_the_asked_scale() -> None:
    delta = np.asarray(smooth_perturbation(jax.random.key(5), (4000, 7, 2), 0.5))
    ramp = np.linspace(0, 1, 7)[None, :, None]
    rebuilt = delta[:, :1] * (1 - ramp) + delta[:, -1:] * ramp
    np.testing.assert_allclose(delta, rebuilt, atol=1e-6)
    assert delta[:, 0].std() == pytest.approx(0.5, rel=0.05) and delta[:, -1].std() == pytest.approx(0.5, rel=0.05)


def test_one_row_is_refused() -> None:
    obs, actions, returns = _batch()
    with pytest.raises(ValueError, match="at least 2 rows"):
        critic_diagnostics(lambda o, a: o[:, 0], obs[:1], actions[:1], returns[:1], jax.random.key(0))
