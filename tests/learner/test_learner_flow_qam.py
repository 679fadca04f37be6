"""Flow sampler / loss and QAM adjoint, checked against closed forms and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lwd_learner import flow, qam

B, H, A = 3, 2, 2
D = H * A


def _affine_field(m: np.ndarray, c: np.ndarray):
    """Time-independent affine velocity ``f(a) = M vec(a) + c`` in JAX form."""
    mj, cj = jnp.asarray(m, jnp.float32), jnp.asarray(c, jnp.float32)

    def fn(obs, a, w):
        del obs, w
        return (a.reshape(a.shape[0], -1) @ mj.T + cj).reshape(a.shape)

    return fn


def test_euler_affine_field_matches_discrete_closed_form() -> None:
    rng = np.random.default_rng(0)
    m = rng.normal(size=(D, D)) * 0.5
    c = rng.normal(size=D)
    a0 = rng.normal(size=(B, D))
    n = 10
    step_matrix = np.eye(D) + m / n
    # a_N = P^N a_0 + sum_{j<N} P^j c / N with P = I + M/N
    want = a0 @ np.linalg.matrix_power(step_matrix, n).T
    want += sum(np.linalg.matrix_power(step_matrix, j) @ c / n for j in range(n))
    noise = jnp.asarray(a0.reshape(B, H, A), jnp.float32)
    got = flow.euler_sample(_affine_field(m, c), jnp.zeros((B, 1)), noise, n)
    np.testing.assert_allclose(np.asarray(got).reshape(B, D), want, rtol=1e-4, atol=1e-4)
    path, times = flow.euler_trajectory(_affine_field(m, c), jnp.zeros((B, 1)), noise, n)
    assert path.shape == (n + 1, B, H, A)
    np.testing.assert_allclose(np.asarray(times), np.arange(n) / n, atol=1e-7)
    np.testing.assert_allclose(path[-1], got, atol=1e-5)


def test_euler_many_steps_approaches_matrix_exponential() -> None:
    m = np.array([[0.0, 1.0], [-1.0, 0.0]])  # rotation by 1 rad over w in [0, 1]
    field = _affine_field(np.kron(np.eye(2), m), np.zeros(D))
    noise = jnp.ones((1, H, A))
    got = np.asarray(flow.euler_sample(field, jnp.zeros((1, 1)), noise, 2000)).reshape(2, 2)
    rot = np.array([[np.cos(1), np.sin(1)], [-np.sin(1), np.cos(1)]])
    np.testing.assert_allclose(got, (rot @ np.ones((2, 2)).T).T, atol=2e-3)


def test_point_mass_field_is_exact_and_has_zero_fm_loss() -> None:
    target = jnp.arange(B * H * A, dtype=jnp.float32).reshape(B, H, A) / 10

    def field(obs, a, w):
        del obs
        return (target - a) / (1.0 - w)[:, None, None]

    noise = jax.random.normal(jax.random.key(0), (B, H, A))
    np.testing.assert_allclose(flow.euler_sample(field, None, noise, 10), target, atol=1e-5)
    w = jnp.array([0.0, 0.3, 0.9])
    assert float(flow.flow_matching_loss(field, None, target, noise, w)) < 1e-9
    # a wrong field has the hand-computed loss: f = 0 gives ||a1 - a0||^2 per sample
    zero = lambda obs, a, w: jnp.zeros_like(a)  # noqa: E731
    want = np.mean(np.sum(np.square(np.asarray(target - noise)), axis=(1, 2)))
    np.testing.assert_allclose(float(flow.flow_matching_loss(zero, None, target, noise, w)), want, rtol=1e-5)


def test_interpolation_endpoints() -> None:
    a0, a1 = jnp.zeros((2, H, A)), jnp.ones((2, H, A))
    np.testing.assert_allclose(flow.interpolate(a0, a1, jnp.array([0.0, 1.0]))[:, 0, 0], [0.0, 1.0])


def _numpy_linear_rollout(a: np.ndarray, k: int, n: int, m0, m1, c) -> np.ndarray:
    """Independent float64 Euler rollout of f(a, w) = (M0 + w M1) a + c from grid index k."""
    for j in range(k, n):
        w = j / n
        a = a + ((m0 + w * m1) @ a + c) / n
    return a


def test_adjoint_matches_finite_differences_on_linear_flow() -> None:
    rng = np.random.default_rng(1)
    n, lam = 6, 2.0
    m0, m1 = rng.normal(size=(D, D)) * 0.6, rng.normal(size=(D, D)) * 0.6
    c = rng.normal(size=D)
    centre = rng.normal(size=D)

    def q_numpy(a):
        return -np.sum((a - centre) ** 2) + np.sin(a).sum()

    def field(obs, a, w):
        del obs
        mat = jnp.asarray(m0, jnp.float32)[None] + w[:, None, None] * jnp.asarray(m1, jnp.float32)[None]
        flat = jnp.einsum("bij,bj->bi", mat, a.reshape(a.shape[0], -1)) + jnp.asarray(c, jnp.float32)
        return flat.reshape(a.shape)

    def q_fn(a):
        flat = a.reshape(a.shape[0], -1)
        return -jnp.sum((flat - jnp.asarray(centre, jnp.float32)) ** 2, -1) + jnp.sin(flat).sum(-1)

    noise = jnp.asarray(rng.normal(size=(B, H, A)), jnp.float32)
    targets = qam.adjoint_targets(field, q_fn, jnp.zeros((B, 1)), noise, n, lam)
    assert targets.adjoints.shape == (n, B, H, A)
    eps = 1e-5
    for k in (0, 2, n - 1):
        for b in range(B):
            a_k = np.asarray(targets.states[k, b], np.float64).reshape(D)
            fd = np.zeros(D)
            for i in range(D):
                e = np.zeros(D)
                e[i] = eps
                plus = -q_numpy(_numpy_linear_rollout(a_k + e, k, n, m0, m1, c)) / lam
                minus = -q_numpy(_numpy_linear_rollout(a_k - e, k, n, m0, m1, c)) / lam
                fd[i] = (plus - minus) / (2 * eps)
            got = np.asarray(targets.adjoints[k, b]).reshape(D)
            np.testing.assert_allclose(got, fd, rtol=2e-3, atol=2e-3 * np.abs(fd).max())
    # the reference velocities recovered from the path equal the field at the grid points
    w_k = jnp.zeros((B,)) + targets.times[3]
    np.testing.assert_allclose(targets.reference_velocity[3], field(None, targets.states[3], w_k), atol=1e-4)


def test_adjoint_matching_loss_hand_computed_and_optimum() -> None:
    n = 4
    states = jnp.zeros((n, B, H, A))
    times = jnp.arange(n, dtype=jnp.float32) / n
    ref_v = jnp.ones((n, B, H, A))
    adj = jnp.full((n, B, H, A), -0.5)
    targets = qam.AdjointTargets(states, times, ref_v, adj, jnp.zeros((B, H, A)))
    sig = np.sqrt(2 * (1 - (np.arange(n) + 0.5) / n) * (np.arange(n) + 0.5) / n)
    # policy = reference: residual = sigma * g per element
    same = lambda obs, a, w: jnp.ones_like(a)  # noqa: E731
    want = np.mean(H * A * (sig * 0.5) ** 2)
    np.testing.assert_allclose(float(qam.adjoint_matching_loss(same, None, targets)), want, rtol=1e-5)

    # the loss is minimised (zero) by f_theta = f_beta - sigma^2 / 2 * g, which moves along -g = +grad Q
    def optimum(obs, a, w):
        s2 = 2 * (1 - (w + 0.5 / n)) * (w + 0.5 / n)
        return jnp.ones_like(a) + (s2 / 2 * 0.5)[:, None, None]

    assert float(qam.adjoint_matching_loss(optimum, None, targets)) < 1e-10
