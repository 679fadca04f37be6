"""DIVL maths checked against independent numpy / plain-Python computations."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from lwd_learner import divl

ATOMS = np.linspace(-0.1, 1.1, 201)


def _c51_loop(value: float, atoms: np.ndarray) -> np.ndarray:
    """Textbook C51 projection of one scalar, written as a loop over atoms."""
    out = np.zeros(len(atoms))
    v = min(max(value, atoms[0]), atoms[-1])
    for i in range(len(atoms) - 1):
        lo, hi = atoms[i], atoms[i + 1]
        if lo <= v <= hi:
            frac = (v - lo) / (hi - lo)
            out[i] += 1.0 - frac
            out[i + 1] += frac
            return out
    raise AssertionError("value not bracketed")


def test_c51_hand_example() -> None:
    atoms = jnp.array([0.0, 0.5, 1.0])
    got = np.asarray(divl.c51_project(jnp.array([0.2, 0.5, 1.7, -3.0, 0.75]), atoms))
    want = np.array([[0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_c51_matches_loop_and_preserves_mass_and_mean() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(-0.1, 1.1, size=64).astype(np.float32).astype(np.float64)
    got = np.asarray(divl.c51_project(jnp.asarray(values, jnp.float32), divl.make_atoms()))
    want = np.stack([_c51_loop(v, ATOMS) for v in values])
    np.testing.assert_allclose(got, want, atol=1e-4)  # float32 arithmetic on atom positions ~200
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got @ ATOMS, values, atol=1e-5)
    assert (np.count_nonzero(got > 1e-7, axis=-1) <= 2).all()


def test_c51_out_of_support_is_clipped() -> None:
    got = np.asarray(divl.c51_project(jnp.array([-5.0, 9.0]), divl.make_atoms()))
    assert got[0, 0] == pytest.approx(1.0) and got[1, -1] == pytest.approx(1.0)


def test_quantile_hand_built() -> None:
    atoms = jnp.array([0.0, 1.0, 2.0, 3.0])
    probs = jnp.array([0.1, 0.4, 0.0, 0.5])  # CDF 0.1, 0.5, 0.5, 1.0
    for tau, want in [(0.05, 0.0), (0.1, 0.0), (0.11, 1.0), (0.5, 1.0), (0.51, 3.0), (0.99, 3.0)]:
        assert float(divl.quantile(probs, atoms, tau)) == want, tau


def test_quantile_per_sample_tau_vs_searchsorted() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(201) * 0.3, size=32)
    tau = rng.uniform(0.05, 0.95, size=32)
    got = np.asarray(divl.quantile(jnp.asarray(probs, jnp.float32), divl.make_atoms(), jnp.asarray(tau, jnp.float32)))
    want = np.array([ATOMS[np.searchsorted(np.cumsum(p), t, side="left")] for p, t in zip(probs, tau, strict=True)])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_normalized_entropy_extremes_and_value() -> None:
    uniform = jnp.full((201,), 1 / 201)
    one_hot = jnp.zeros(201).at[17].set(1.0)
    assert float(divl.normalized_entropy(uniform)) == pytest.approx(1.0, abs=1e-5)
    assert float(divl.normalized_entropy(one_hot)) == pytest.approx(0.0, abs=1e-7)
    p = np.array([0.5, 0.25, 0.25])
    want = -(p * np.log(p)).sum() / math.log(3)
    assert float(divl.normalized_entropy(jnp.asarray(p))) == pytest.approx(want, rel=1e-5)


def test_adaptive_tau_clips() -> None:
    uniform = jnp.full((2, 201), 1 / 201)
    one_hot = jnp.zeros((2, 201)).at[:, 3].set(1.0)
    # confident: tau_base itself (inside the clip range)
    np.testing.assert_allclose(divl.adaptive_tau(one_hot, 0.9, 0.3, 0.5, 0.95), 0.9, atol=1e-6)
    # diffuse: 0.6 - 0.3 = 0.3 is clipped up to tau_min
    np.testing.assert_allclose(divl.adaptive_tau(uniform, 0.6, 0.3, 0.5, 0.95), 0.5, atol=1e-6)
    # tau_base above tau_max is clipped down
    np.testing.assert_allclose(divl.adaptive_tau(one_hot, 0.99, 0.3, 0.5, 0.95), 0.95, atol=1e-6)
    p = jnp.array([0.5, 0.25, 0.25])
    h = -(0.5 * math.log(0.5) + 0.5 * math.log(0.25)) / math.log(3)
    assert float(divl.adaptive_tau(p, 0.9, 0.3, 0.1, 0.99)) == pytest.approx(0.9 - 0.3 * h, rel=1e-5)


def _nstep_loop(rewards, terminals, valid, boot, gamma_chunk):
    """Plain-Python eq. 19 with truncation; boot[i] is the value of state s_{t+iH}."""
    ret, disc = 0.0, 1.0
    for i in range(len(rewards)):
        if not valid[i]:
            return ret + disc * boot[i]
        ret += disc * rewards[i]
        disc *= gamma_chunk
        if terminals[i]:
            return ret
    return ret + disc * boot[len(rewards)]


def test_nstep_targets_vs_loop() -> None:
    rng = np.random.default_rng(2)
    b, n, gamma_chunk = 200, 5, 0.9
    rewards = rng.integers(0, 2, size=(b, n)).astype(np.float32)
    terminals = rng.random((b, n)) < 0.2
    valid = np.ones((b, n), bool)
    ends = rng.integers(1, n + 3, size=b)  # episode recording ends after `ends` chunks (some > n)
    for row, end in enumerate(ends):
        valid[row, end:] = False
    boot = rng.uniform(0, 1, size=(b, n + 1)).astype(np.float32)
    want = np.array([_nstep_loop(*args, gamma_chunk) for args in zip(rewards, terminals, valid, boot, strict=True)])
    arrays = [jnp.asarray(x) for x in (rewards, terminals, valid, boot)]
    got = divl.nstep_targets(*arrays, gamma_chunk)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    # the cases the loop exercises must actually occur
    assert terminals.any() and (~valid).any()


def test_nstep_returns_explicit_cases() -> None:
    g = 0.5
    rewards = jnp.array([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0], [1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])
    terminals = jnp.array([[0, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]], bool)
    valid = jnp.array([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 1]], bool)
    reward, discount, steps = divl.nstep_returns(rewards, terminals, valid, g)
    np.testing.assert_allclose(reward, [1 + 1 + 1, 1 + 1, 1 + 1, 1])
    np.testing.assert_allclose(discount, [g**3, 0.0, g**2, 0.0])
    np.testing.assert_array_equal(steps, [3, 2, 2, 1])


def test_expectile_loss_vs_numpy() -> None:
    rng = np.random.default_rng(3)
    diff = rng.normal(size=100)
    for tau in (0.5, 0.7, 0.9):
        want = np.where(diff < 0, 1 - tau, tau) * diff**2
        np.testing.assert_allclose(divl.expectile_loss(jnp.asarray(diff), tau), want, rtol=1e-5)


def test_cross_entropy_vs_numpy() -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 7))
    target = rng.dirichlet(np.ones(7), size=3)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(
        divl.categorical_cross_entropy(jnp.asarray(logits), jnp.asarray(target)), -(target * logp).sum(-1), rtol=1e-5
    )
