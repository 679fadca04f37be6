"""Agent smoke tests: jitted DIVL+QAM and SFT updates on random data, parameter roles, configs."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.learner_batches import TINY_NETWORK, random_batch

from lwd_learner import divl, qam
from lwd_learner.agent import LWDAgent
from lwd_learner.config import LearnerConfig, NetworkConfig, PolicyConfig, ValueConfig
from lwd_learner.networks import Critic, ValueNet, VelocityField, param_count

SMALL = TINY_NETWORK
B = 16


def _batch(key: jax.Array, net: NetworkConfig) -> dict[str, jax.Array]:
    return random_batch(key, net, B, flags=False)


def _leaves_equal(a, b) -> bool:
    return all(
        bool(jnp.array_equal(x, y))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


@pytest.mark.parametrize(
    ("value_mode", "tau_mode", "loss_steps"),
    [("divl", "adaptive", None), ("divl", "constant", 3), ("expectile", "adaptive", None)],
)
def test_update_smoke(value_mode: str, tau_mode: str, loss_steps: int | None) -> None:
    config = LearnerConfig(
        network=SMALL,
        value=ValueConfig(value_mode=value_mode, tau_mode=tau_mode),
        policy=PolicyConfig(flow_steps=4, qam_loss_steps=loss_steps),
    )
    agent = LWDAgent(config)
    state = agent.start_rl(agent.init(jax.random.key(0)))
    reference = state.reference_params
    for i in range(3):
        previous = state
        state, metrics = agent.update(state, _batch(jax.random.key(i), SMALL), jax.random.key(100 + i))
    for name in ("v_loss", "q_loss", "qam_loss", "q_mean", "tau_mean", "td_target_mean"):
        assert np.isfinite(float(metrics[name])), name
    assert _leaves_equal(state.reference_params, reference)  # QAM never touches f_beta
    assert not _leaves_equal(state.policy_params, reference)
    assert int(state.step) == 3
    # EMA: target <- (1 - rate) target + rate * online
    rate = config.value.ema_rate
    want = jax.tree_util.tree_map(
        lambda t, c: (1 - rate) * t + rate * c, previous.target_critic_params, state.critic_params
    )
    for got, exp in zip(
        jax.tree_util.tree_leaves(state.target_critic_params), jax.tree_util.tree_leaves(want), strict=True
    ):
        np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-7)
    if value_mode == "divl":
        lo, hi = (config.value.tau_min, config.value.tau_max) if tau_mode == "adaptive" else (0.6, 0.6)
        assert lo - 1e-6 <= float(metrics["tau_mean"]) <= hi + 1e-6
        assert 0.0 <= float(metrics["entropy_mean"]) <= 1.0


def test_td_target_uses_quantile_of_updated_value() -> None:
    """Recompute the critic target independently from the updated V and compare with the q loss."""
    config = LearnerConfig(network=SMALL, policy=PolicyConfig(flow_steps=2))
    agent = LWDAgent(config)
    state = agent.init(jax.random.key(1))
    batch = _batch(jax.random.key(2), SMALL)
    new_state, metrics = agent.update(state, batch, jax.random.key(3))
    logits = agent.value.apply(new_state.value_params, batch["next_obs"])
    probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    ent = -(probs * np.log(np.maximum(probs, 1e-30))).sum(-1) / np.log(probs.shape[-1])
    tau = np.clip(0.6 - 0.3 * ent, 0.5, 0.95)
    atoms = np.asarray(divl.make_atoms())
    boot = np.array([atoms[np.searchsorted(np.cumsum(p), t)] for p, t in zip(probs, tau, strict=True)])
    y = np.asarray(batch["reward"]) + np.asarray(batch["discount"]) * boot
    q = np.asarray(agent.critic.apply(state.critic_params, batch["obs"], batch["actions"]))
    np.testing.assert_allclose(float(metrics["q_loss"]), np.mean((q - y[None]) ** 2), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["tau_mean"]), tau.mean(), rtol=1e-4)


@pytest.mark.parametrize("schedule", ["lwd", "memoryless"])
def test_extract_update_is_the_full_updates_policy_step_with_the_critic_held_fixed(schedule: str) -> None:
    """QAM against a given critic = the policy half of the DIVL + QAM update that produced that critic
    (same key, same batch), and it leaves every other part of the state alone."""
    config = LearnerConfig(network=SMALL, policy=PolicyConfig(flow_steps=3, noise_schedule=schedule))
    agent = LWDAgent(config)
    state = agent.start_rl(agent.init(jax.random.key(4)))
    state, _ = agent.update(state, _batch(jax.random.key(5), SMALL), jax.random.key(6))  # policy != reference
    batch, key = _batch(jax.random.key(7), SMALL), jax.random.key(8)
    full, full_metrics = agent.update(state, batch, key)
    extracted, metrics = agent.extract_update(state, full.critic_params, batch, key)
    for got, want in zip(
        jax.tree_util.tree_leaves(extracted.policy_params), jax.tree_util.tree_leaves(full.policy_params), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["qam_loss"]), float(full_metrics["qam_loss"]), rtol=1e-5)
    for name in ("critic_params", "target_critic_params", "value_params", "reference_params"):
        assert _leaves_equal(getattr(extracted, name), getattr(state, name)), name
    assert int(extracted.step) == int(state.step) + 1


def test_sft_update_trains_reference_only_and_start_rl_copies() -> None:
    agent = LWDAgent(LearnerConfig(network=SMALL))
    state = agent.init(jax.random.key(0))
    batch = _batch(jax.random.key(1), SMALL)
    new, metrics = agent.sft_update(state, batch, jax.random.key(2))
    assert np.isfinite(float(metrics["fm_loss"]))
    assert not _leaves_equal(new.reference_params, state.reference_params)
    assert _leaves_equal(new.policy_params, state.policy_params)
    assert _leaves_equal(new.critic_params, state.critic_params)
    rl = agent.start_rl(new)
    assert _leaves_equal(rl.policy_params, new.reference_params)
    chunks = agent.sample_actions(rl.policy_params, batch["obs"], jnp.zeros((B, SMALL.horizon, SMALL.action_dim)))
    assert chunks.shape == (B, SMALL.horizon, SMALL.action_dim)


def test_embedded_velocity_equals_direct_call() -> None:
    net = VelocityField(horizon=4, action_dim=3, hidden_dims=(16,), obs_embed_dim=8)
    obs, a, w = jnp.ones((2, 5)), jnp.ones((2, 4, 3)), jnp.array([0.1, 0.7])
    p = net.init(jax.random.key(0), obs, a, w)
    z = net.apply(p, obs, method=VelocityField.embed)
    np.testing.assert_allclose(net.apply(p, z, a, w, method=VelocityField.velocity), net.apply(p, obs, a, w), atol=1e-6)


def test_default_networks_shapes_and_size() -> None:
    net = NetworkConfig()
    obs, a = jnp.zeros((2, net.obs_dim)), jnp.zeros((2, net.horizon, net.action_dim))
    critic = Critic().init(jax.random.key(0), obs, a)
    assert Critic().apply(critic, obs, a).shape == (2, 2)
    assert ValueNet().apply(ValueNet().init(jax.random.key(0), obs), obs).shape == (2, 201)
    agent = LWDAgent(LearnerConfig())
    state = agent.init(jax.random.key(0))
    total = sum(param_count(p) for p in (state.policy_params, state.critic_params, state.value_params))
    assert 0.5e6 <= total <= 1.5e6, total


def test_subsampled_loss_matches_full_when_indices_cover_all_steps() -> None:
    n, b = 5, 3
    key = jax.random.split(jax.random.key(0), 3)
    targets = qam.AdjointTargets(
        states=jax.random.normal(key[0], (n, b, 2, 2)),
        times=jnp.arange(n) / n,
        reference_velocity=jax.random.normal(key[1], (n, b, 2, 2)),
        adjoints=jax.random.normal(key[2], (n, b, 2, 2)),
        terminal_actions=jnp.zeros((b, 2, 2)),
    )

    def policy(cond, a, w):
        return 0.5 * a + w[:, None, None]

    full = qam.adjoint_matching_loss(policy, None, targets)
    permuted = jnp.stack([jnp.roll(jnp.arange(n), s) for s in range(b)], axis=1)  # each column a permutation
    np.testing.assert_allclose(qam.adjoint_matching_loss(policy, None, targets, permuted), full, rtol=1e-5)
    only_first = qam.adjoint_matching_loss(policy, None, targets, jnp.zeros((1, b), jnp.int32))
    assert not np.isclose(float(only_first), float(full))


def test_stage_configs() -> None:
    assert LearnerConfig.offline(long_horizon=True).value.n_step == 10
    assert LearnerConfig.offline().value.n_step == 1
    online = LearnerConfig.online()
    assert online.value.tau_base == 0.9 and online.value.n_step == 1
    assert LearnerConfig().gamma_chunk == pytest.approx(0.9999**30)
    with pytest.raises(dataclasses.FrozenInstanceError):
        online.value.tau_base = 0.5  # type: ignore[misc]


def test_critic_sees_how_far_a_chunk_moves_not_only_its_direction() -> None:
    """Scaling every step of a chunk (move 2 cm instead of 1 cm) must change Q.

    With a LayerNorm on the pooled tokens (session 10) a freshly built critic gave Q(2a) = Q(a)
    to ~1e-3, and the action-gradient along ``a`` vanished: QAM could never say "move further"."""
    critic = Critic((64, 64), (64,), 32, 32, 2)
    k_obs, k_act, k_init = jax.random.split(jax.random.key(0), 3)
    obs = jax.random.normal(k_obs, (16, 20))
    actions = jax.random.normal(k_act, (16, 30, 16))
    params = critic.init(k_init, obs, actions)
    q = critic.apply(params, obs, actions)
    q2 = critic.apply(params, obs, 2.0 * actions)
    spread = float(jnp.std(q))
    assert float(jnp.mean(jnp.abs(q2 - q))) > 0.1 * spread, (q[0], q2[0], spread)
    # The derivative of Q along the chunk's own direction is not zero either.
    along = jax.jvp(lambda a: critic.apply(params, obs, a)[0], (actions,), (actions,))[1]
    assert float(jnp.mean(jnp.abs(along))) > 0.05 * spread
