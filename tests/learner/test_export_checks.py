"""Policy export/artifact checks that need no exporter: refusals happen before jax2onnx is touched."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lwd_learner.agent import LWDAgent
from lwd_learner.artifact import build_artifact
from lwd_learner.config import LearnerConfig, NetworkConfig
from lwd_learner.export import (
    ExportDependencyError,
    ExportError,
    assemble_obs,
    check_exportable,
    contract_policy_fn,
    export_onnx,
    import_jax2onnx,
    lwd_sampler,
    random_reference_inputs,
)
from lwd_protocol.manifest import ActionSpec, ManifestError, Normalization, ObservationSpec
from lwd_protocol.policy_io import NOISE_INPUT, STATE_INPUT, TASK_INPUT

TASKS = ["restocking", "freezer", "shoebox"]
STATE_DIM = 5
OBS = ObservationSpec(state_source="sim_state", state_dim=STATE_DIM, tasks=TASKS)
ACT = ActionSpec()
NET = NetworkConfig(
    obs_dim=STATE_DIM + len(TASKS),
    policy_hidden=(16,),
    critic_hidden=(8,),
    value_hidden=(8,),
    obs_hidden=(8,),
    obs_embed_dim=8,
    time_dim=8,
    pool_dim=8,
    pool_heads=2,
)
CONFIG = LearnerConfig(network=NET)


def _norm(state_dim: int = STATE_DIM, action_dim: int = ACT.dim) -> Normalization:
    return Normalization([0.0] * state_dim, [1.0] * state_dim, [0.0] * action_dim, [1.0] * action_dim)


def _noop_sampler(obs: jax.Array, noise: jax.Array) -> jax.Array:
    return noise


def test_check_exportable_names_the_mismatch() -> None:
    check_exportable(NET.obs_dim, NET.horizon, NET.action_dim, OBS, ACT)
    with pytest.raises(ExportError, match=r"obs_dim 8 != state_dim 6 \+ 3 task\(s\) = 9"):
        check_exportable(8, 30, 16, ObservationSpec("sim_state", 6, tasks=TASKS), ACT)
    with pytest.raises(ExportError, match="cameras"):
        check_exportable(8, 30, 16, ObservationSpec("sim_state", 5, ["head"], [64, 64], TASKS), ACT)
    with pytest.raises(ExportError, match="horizon 10"):
        check_exportable(8, 10, 16, OBS, ACT)
    with pytest.raises(ExportError, match="state_source"):
        check_exportable(8, 30, 16, ObservationSpec("pixels", 5, tasks=TASKS), ACT)


def test_policy_fn_assembles_state_then_task_one_hot() -> None:
    seen = {}

    def sampler(obs: jax.Array, noise: jax.Array) -> jax.Array:
        seen["obs"] = obs
        return noise * 2.0

    inputs = random_reference_inputs(OBS, ACT, 3, seed=1)
    out = contract_policy_fn(sampler, OBS, ACT)(inputs[STATE_INPUT], inputs[TASK_INPUT], inputs[NOISE_INPUT])
    np.testing.assert_array_equal(np.asarray(out), 2.0 * inputs[NOISE_INPUT])
    want = np.concatenate([inputs[STATE_INPUT], inputs[TASK_INPUT]], axis=1)
    np.testing.assert_array_equal(np.asarray(seen["obs"]), want)
    single = ObservationSpec("joint_positions", 16)
    state = jnp.ones((2, 16))
    assert assemble_obs(state) is state
    with pytest.raises(TypeError, match="inputs"):
        contract_policy_fn(sampler, single, ACT)(state)


def test_reference_inputs_are_valid_contract_tensors() -> None:
    inputs = random_reference_inputs(OBS, ACT, 5, seed=3)
    assert inputs[STATE_INPUT].shape == (5, STATE_DIM) and inputs[STATE_INPUT].dtype == np.float32
    assert inputs[NOISE_INPUT].shape == (5, ACT.horizon, ACT.dim)
    task = inputs[TASK_INPUT]
    assert task.shape == (5, len(TASKS))
    np.testing.assert_array_equal(task.sum(axis=1), 1.0)
    assert set(np.argmax(task, axis=1)) == {0, 1, 2}  # 5 rows cycle through all 3 tasks
    np.testing.assert_array_equal(random_reference_inputs(OBS, ACT, 5, seed=3)[NOISE_INPUT], inputs[NOISE_INPUT])


def test_lwd_sampler_matches_agent_sampler() -> None:
    agent = LWDAgent(CONFIG)
    zeros = (jnp.zeros((1, NET.obs_dim)), jnp.zeros((1, NET.horizon, NET.action_dim)), jnp.zeros((1,)))
    params = jax.jit(agent.velocity.init)(jax.random.PRNGKey(0), *zeros)
    rng = np.random.default_rng(2)
    obs = rng.standard_normal((3, NET.obs_dim)).astype(np.float32)
    noise = rng.standard_normal((3, NET.horizon, NET.action_dim)).astype(np.float32)
    got = jax.jit(lwd_sampler(agent, params))(obs, noise)
    np.testing.assert_allclose(np.asarray(got), np.asarray(agent.sample_actions(params, obs, noise)), atol=1e-6)
    with pytest.raises(ExportError, match="flow_steps"):
        lwd_sampler(agent, params, flow_steps=0)


def test_missing_jax2onnx_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # makes `import jax2onnx` raise ImportError
    with pytest.raises(ExportDependencyError, match=r"learner\[export\]"):
        import_jax2onnx()


def test_export_refuses_bad_opset_and_existing_paths(tmp_path) -> None:
    with pytest.raises(ValueError, match="opset"):
        export_onnx(_noop_sampler, OBS, ACT, tmp_path / "a.onnx", opset=21)
    (tmp_path / "b.onnx").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="fresh path"):
        export_onnx(_noop_sampler, OBS, ACT, tmp_path / "b.onnx")
    with pytest.raises(ExportError, match="cameras"):
        export_onnx(_noop_sampler, ObservationSpec("sim_state", 5, ["head"], [64, 64]), ACT, tmp_path / "d.onnx")
    (tmp_path / "c.onnx.data").write_bytes(b"stale external data")
    with pytest.raises(FileExistsError, match=r"c\.onnx\.data"):
        export_onnx(_noop_sampler, OBS, ACT, tmp_path / "c.onnx")


def test_build_artifact_validates_before_exporting(tmp_path) -> None:
    kwargs = dict(normalization=_norm(), observation=OBS, version=3, parent_version=2, training_snapshot=7)
    with pytest.raises(ManifestError, match="state_mean has 4 values"):
        build_artifact(tmp_path / "v1", CONFIG, None, **{**kwargs, "normalization": _norm(state_dim=4)})
    with pytest.raises(ManifestError, match="parent_version 3"):
        build_artifact(tmp_path / "v2", CONFIG, None, **{**kwargs, "parent_version": 3})
    with pytest.raises(ExportError, match="obs_dim"):
        build_artifact(tmp_path / "v3", CONFIG, None, **{**kwargs, "observation": ObservationSpec("sim_state", 9)})
    (tmp_path / "v4").mkdir()
    with pytest.raises(FileExistsError, match="fresh folder"):
        build_artifact(tmp_path / "v4", CONFIG, None, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v4"]  # nothing half-built left behind
