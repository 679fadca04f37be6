"""Orbax checkpoints: resuming mid-run reproduces the uninterrupted run exactly; config and key round-trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.learner_batches import TINY_NETWORK, random_batch

from lwd_learner.baselines import LWDMethod, SFTMethod
from lwd_learner.checkpoint import Checkpointer, config_differences
from lwd_learner.config import LearnerConfig, PolicyConfig, ValueConfig

SMALL = TINY_NETWORK
CONFIG = LearnerConfig(network=SMALL, policy=PolicyConfig(flow_steps=2, qam_loss_steps=1))
B = 16


def _batch(step: int) -> dict[str, jax.Array]:
    return random_batch(jax.random.key(1000 + step), SMALL, B, flags=False)


def _run(method: LWDMethod, state, key: jax.Array, steps: range) -> tuple[object, jax.Array, list[dict]]:
    """Training loop whose randomness comes from a carried key (split every step), as a learner's does."""
    history = []
    for i in steps:
        key, sub = jax.random.split(key)
        state, metrics = method.update(state, _batch(i), sub)
        history.append({k: np.asarray(v) for k, v in metrics.items()})
    return state, key, history


def test_resume_mid_run_gives_the_same_next_losses(tmp_path: Path) -> None:
    method = LWDMethod(CONFIG)
    start = method.init(jax.random.key(0))
    final_uninterrupted, _, uninterrupted = _run(method, start, jax.random.key(7), range(4))

    state, key, _ = _run(method, start, jax.random.key(7), range(2))
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ckpt.save(2, state, key=key, config=CONFIG, extra={"method": "lwd", "snapshot_version": 12})
    del state, key

    with Checkpointer(tmp_path / "ckpt") as ckpt:  # a new process would do exactly this
        assert ckpt.latest_step() == 2
        restored = ckpt.restore(jax.eval_shape(method.init, jax.random.key(0)), config=CONFIG)
    assert restored.step == 2 and int(restored.state.step) == 2
    assert restored.config == CONFIG and restored.extra == {"method": "lwd", "snapshot_version": 12}
    resumed_state, _, resumed = _run(method, restored.state, restored.key, range(2, 4))
    for got, want in zip(resumed, uninterrupted[2:], strict=True):
        for name in ("v_loss", "q_loss", "qam_loss", "tau_mean"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    for a, b in zip(
        jax.tree_util.tree_leaves(resumed_state), jax.tree_util.tree_leaves(final_uninterrupted), strict=True
    ):
        np.testing.assert_array_equal(a, b)  # params, optimiser moments, step, tau statistics


def test_config_mismatch_missing_step_and_retention(tmp_path: Path) -> None:
    sft = SFTMethod(CONFIG)
    state = sft.init(jax.random.key(0))
    ckpt = Checkpointer(tmp_path, max_to_keep=2)
    for step in (1, 2, 3):
        assert ckpt.save(step, state, key=jax.random.key(step), config=CONFIG)
    assert ckpt.all_steps() == [2, 3]
    assert not ckpt.save(3, state, key=jax.random.key(9), config=CONFIG)  # a step is never rewritten
    other = dataclasses.replace(CONFIG, value=ValueConfig(tau_base=0.9))
    assert config_differences(CONFIG, other) == ["value.tau_base"]
    with pytest.raises(ValueError, match=r"different config: \['value.tau_base'\]"):
        ckpt.restore(state, config=other)
    with pytest.raises(FileNotFoundError, match="no checkpoint step 1"):
        ckpt.restore(state, step=1)
    restored = ckpt.restore(state, step=2)
    assert jax.random.key_impl(restored.key) == jax.random.key_impl(jax.random.key(2))
    np.testing.assert_array_equal(jax.random.key_data(restored.key), jax.random.key_data(jax.random.key(2)))
    ckpt.close()
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        Checkpointer(tmp_path / "empty").restore(state)


def test_legacy_uint32_key_and_async_save(tmp_path: Path) -> None:
    state = SFTMethod(CONFIG).init(jax.random.key(0))
    with Checkpointer(tmp_path, async_save=True) as ckpt:
        ckpt.save(5, state, key=jax.random.PRNGKey(3), config=CONFIG, extra={"stage": "offline"})
        ckpt.wait()
        restored = ckpt.restore(state)
    assert restored.key.dtype == jnp.uint32
    np.testing.assert_array_equal(restored.key, jax.random.PRNGKey(3))
    assert restored.extra == {"stage": "offline"}
    for a, b in zip(jax.tree_util.tree_leaves(restored.state), jax.tree_util.tree_leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="rng key"):
        Checkpointer(tmp_path / "bad").save(0, state, key=jnp.zeros(2, jnp.float32), config=CONFIG)
