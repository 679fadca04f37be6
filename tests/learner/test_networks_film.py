"""FiLM-conditioned velocity trunk (`NetworkConfig.policy_conditioning="film"`), against numpy.

The FiLM trunk must (a) start as the plain concatenating trunk (zero-initialised modulation), so a
switch of conditioning changes what can be learned, not the starting policy; and (b) compute
``gelu(LN(W x + b) * (1 + scale(c)) + shift(c))`` per hidden layer, checked here by an
independent numpy forward pass with non-zero modulation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lwd_learner.networks import MLP, FiLMMLP, VelocityField

H, A, OBS = 4, 3, 7


def _field(conditioning: str) -> VelocityField:
    return VelocityField(horizon=H, action_dim=A, hidden_dims=(32, 32), obs_hidden_dims=(16,),
                         obs_embed_dim=16, time_dim=8, conditioning=conditioning)  # fmt: skip


def _inputs(seed: int = 0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    return jax.random.normal(k1, (5, OBS)), jax.random.normal(k2, (5, H, A)), jax.random.uniform(k3, (5,))


def test_film_field_starts_as_the_concat_field_with_the_same_weights():
    obs, actions, w = _inputs()
    concat, film = _field("concat"), _field("film")
    concat_params = concat.init(jax.random.key(1), obs, actions, w)
    film_params = film.init(jax.random.key(2), obs, actions, w)
    # graft every concat parameter into the film tree; only the (zero) modulation layers stay film's own
    merged = jax.tree_util.tree_map(lambda x: x, film_params)
    for name, sub in concat_params["params"].items():
        if name != "trunk":
            merged["params"][name] = sub
    merged["params"]["trunk"].update(concat_params["params"]["trunk"])
    own = set(film_params["params"]["trunk"]) - set(concat_params["params"]["trunk"])
    assert own == {"Modulation_0", "Modulation_1"}
    np.testing.assert_allclose(film.apply(merged, obs, actions, w), concat.apply(concat_params, obs, actions, w),
                               atol=1e-6)  # fmt: skip
    # and the modulation is really wired in: non-zero modulation changes the output
    bumped = jax.tree_util.tree_map(lambda x: x, merged)
    bumped["params"]["trunk"]["Modulation_0"]["kernel"] = jnp.full_like(
        bumped["params"]["trunk"]["Modulation_0"]["kernel"], 0.1
    )
    assert not np.allclose(film.apply(bumped, obs, actions, w), concat.apply(concat_params, obs, actions, w), atol=1e-3)


def _np_layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _np_gelu_tanh(x: np.ndarray) -> np.ndarray:  # flax's nn.gelu default (approximate=True)
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def test_film_mlp_matches_an_independent_numpy_forward_pass():
    rng = np.random.default_rng(0)
    x, cond = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)
    net = FiLMMLP(hidden_dims=(8, 4), out_dim=2)
    params = net.init(jax.random.key(0), x, cond)
    # random, non-zero modulation everywhere (its init is zero)
    params = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32) * 0.5, params)
    p = jax.tree_util.tree_map(np.asarray, params["params"])
    h = x.astype(np.float64)
    for i in range(2):
        h = _np_layer_norm(h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"], p[f"LayerNorm_{i}"]["scale"],
                           p[f"LayerNorm_{i}"]["bias"])  # fmt: skip
        mod = cond @ p[f"Modulation_{i}"]["kernel"] + p[f"Modulation_{i}"]["bias"]
        scale, shift = mod[:, : h.shape[1]], mod[:, h.shape[1] :]
        h = _np_gelu_tanh(h * (1.0 + scale) + shift)
    expected = h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
    np.testing.assert_allclose(np.asarray(net.apply(params, x, cond)), expected, rtol=1e-4, atol=1e-4)
    # with the modulation zeroed it is exactly the plain MLP on the same weights
    zeroed = {"params": {k: ({kk: jnp.zeros_like(vv) for kk, vv in v.items()} if k.startswith("Modulation") else v)
                         for k, v in params["params"].items()}}  # fmt: skip
    plain = {"params": {k: v for k, v in params["params"].items() if not k.startswith("Modulation")}}
    np.testing.assert_allclose(net.apply(zeroed, x, cond), MLP((8, 4), 2).apply(plain, x), atol=1e-6)


def test_unknown_conditioning_is_refused_by_name():
    obs, actions, w = _inputs()
    with pytest.raises(ValueError, match="conditioning must be 'concat' or 'film', got 'gate'"):
        _field("gate").init(jax.random.key(0), obs, actions, w)
