"""ONNX export and the policy artifact, checked against JAX with the real onnxruntime.

Needs the learner's optional ``export`` extra (jax2onnx); the module skips without it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("jax2onnx", reason="the learner's optional `export` extra (jax2onnx) is not installed")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from lwd_learner.agent import LWDAgent  # noqa: E402
from lwd_learner.artifact import ArtifactTimings, build_artifact  # noqa: E402
from lwd_learner.config import LearnerConfig, NetworkConfig  # noqa: E402
from lwd_learner.export import IR_VERSION, ExportError, export_policy, random_reference_inputs  # noqa: E402
from lwd_protocol.manifest import ActionSpec, Normalization, ObservationSpec, PolicyManifest  # noqa: E402
from lwd_protocol.policy_io import (  # noqa: E402
    ACTIONS_OUTPUT,
    NOISE_INPUT,
    STATE_INPUT,
    TASK_INPUT,
    build_inputs,
    check_io_contract,
    decode_actions,
    input_specs,
    load_reference_io,
    output_specs,
)
from lwd_protocol.robot_spec import CHUNK_HORIZON, JOINT_NAMES  # noqa: E402
from lwd_protocol.store import MANIFEST_NAME, MODEL_NAME, REFERENCE_IO_NAME  # noqa: E402

TASKS = ["restocking", "freezer", "shoebox"]
STATE_DIM = 10
OBS = ObservationSpec(state_source="sim_state", state_dim=STATE_DIM, tasks=TASKS)
ACT = ActionSpec()  # the robot's 16 joints x 30 steps
NET = NetworkConfig(
    obs_dim=STATE_DIM + len(TASKS),
    policy_hidden=(64, 64),
    critic_hidden=(16,),
    value_hidden=(16,),
    obs_hidden=(32,),
    obs_embed_dim=32,
    time_dim=16,
    pool_dim=16,
    pool_heads=2,
)
RNG = np.random.default_rng(11)
NORM = Normalization(
    state_mean=RNG.normal(0.0, 2.0, STATE_DIM).tolist(),
    state_std=RNG.uniform(0.5, 2.0, STATE_DIM).tolist(),
    action_mean=RNG.normal(0.0, 0.5, ACT.dim).tolist(),
    action_std=RNG.uniform(0.1, 1.0, ACT.dim).tolist(),
)


@pytest.fixture(scope="module")
def policy() -> tuple[LWDAgent, object]:
    agent = LWDAgent(LearnerConfig(network=NET))
    # The policy's parameter tree as LWDAgent.init builds it (velocity field only; jitted: eager init is slow).
    zeros = (jnp.zeros((1, NET.obs_dim)), jnp.zeros((1, NET.horizon, NET.action_dim)), jnp.zeros((1,)))
    params = jax.jit(agent.velocity.init)(jax.random.PRNGKey(4), *zeros)
    # Perturb every weight so no layer sits at its (structured) init and the test covers real weights.
    rng = np.random.default_rng(5)
    params = jax.tree_util.tree_map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(np.float32), params)
    return agent, params


@pytest.fixture(scope="module")
def artifact(policy, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PolicyManifest, list[ArtifactTimings]]:
    agent, params = policy
    timings: list[ArtifactTimings] = []
    folder = tmp_path_factory.mktemp("artifacts") / "v000003"
    manifest = build_artifact(
        folder, agent, params, normalization=NORM, observation=OBS, version=3, parent_version=2,
        training_snapshot=1200, on_timings=timings.append,
    )  # fmt: skip
    return folder, manifest, timings


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _jax(agent: LWDAgent, params: object, inputs: dict[str, np.ndarray]) -> np.ndarray:
    obs = np.concatenate([inputs[STATE_INPUT], inputs[TASK_INPUT]], axis=1)
    return np.asarray(agent.sample_actions(params, obs, inputs[NOISE_INPUT]))


def test_onnx_matches_jax_at_batch_1_and_4(policy, tmp_path: Path) -> None:
    agent, params = policy
    result = export_policy(agent, params, OBS, ACT, tmp_path / "policy.onnx")
    assert result.path.is_file() and result.size_bytes == result.path.stat().st_size
    assert result.ir_version == IR_VERSION and result.opset == 20
    session = _session(result.path)
    rows = []
    for batch, seed in ((1, 0), (1, 1), (4, 2), (4, 3)):
        inputs = random_reference_inputs(OBS, ACT, batch, seed=seed)
        (got,) = session.run([ACTIONS_OUTPUT], inputs)
        want = _jax(agent, params, inputs)
        assert got.shape == (batch, ACT.horizon, ACT.dim)
        assert np.max(np.abs(got - want)) < 1e-5
        assert np.std(want) > 0.1  # a real, non-degenerate chunk
        rows.append((inputs, got))
    # Rows are independent: row i of a batch-4 run equals a batch-1 run on row i alone.
    inputs, got = rows[2]
    for i in range(4):
        (single,) = session.run([ACTIONS_OUTPUT], {k: v[i : i + 1] for k, v in inputs.items()})
        np.testing.assert_allclose(single[0], got[i], atol=1e-6)
    # Noise is an input, not a baked-in random op: new noise changes the chunk, the same noise repeats it.
    other = dict(inputs, **{NOISE_INPUT: inputs[NOISE_INPUT][::-1].copy()})
    assert np.max(np.abs(session.run([ACTIONS_OUTPUT], other)[0] - got)) > 1e-2
    np.testing.assert_array_equal(session.run([ACTIONS_OUTPUT], inputs)[0], got)


def test_film_trunk_exports_with_the_same_parity(tmp_path: Path) -> None:
    """The optional FiLM velocity trunk (NetworkConfig.policy_conditioning) goes through the same export."""
    net = dataclasses.replace(NET, policy_conditioning="film")
    agent = LWDAgent(LearnerConfig(network=net))
    zeros = (jnp.zeros((1, net.obs_dim)), jnp.zeros((1, net.horizon, net.action_dim)), jnp.zeros((1,)))
    params = jax.jit(agent.velocity.init)(jax.random.PRNGKey(6), *zeros)
    rng = np.random.default_rng(7)  # non-zero modulation too (it starts at zero)
    params = jax.tree_util.tree_map(lambda x: x + 0.05 * rng.standard_normal(x.shape).astype(np.float32), params)
    assert "Modulation_0" in params["params"]["trunk"]
    session = _session(export_policy(agent, params, OBS, ACT, tmp_path / "film.onnx").path)
    for batch, seed in ((1, 0), (4, 1)):
        inputs = random_reference_inputs(OBS, ACT, batch, seed=seed)
        (got,) = session.run([ACTIONS_OUTPUT], inputs)
        assert np.max(np.abs(got - _jax(agent, params, inputs))) < 1e-5


def test_exported_graph_is_a_single_contract_file(policy, tmp_path: Path) -> None:
    agent, params = policy
    path = export_policy(agent, params, OBS, ACT, tmp_path / "p.onnx", opset=20).path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.onnx"]  # no .data, no temp files
    model = onnx.load(str(path))
    assert model.ir_version == 10
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 20)]
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"RandomNormal", "RandomNormalLike", "RandomUniform", "CastLike", "Loop", "Scan"}

    def io(values: list) -> list[tuple]:
        return [
            (v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim], v.type.tensor_type.elem_type)
            for v in values
        ]

    want_in = [(t.name, ["B", *t.shape[1:]], onnx.TensorProto.FLOAT) for t in input_specs(OBS, ACT)]
    want_out = [(t.name, ["B", *t.shape[1:]], onnx.TensorProto.FLOAT) for t in output_specs(ACT)]
    assert io(model.graph.input) == want_in and io(model.graph.output) == want_out
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["lwd.flow_steps"] == "10" and meta["lwd.flow_time_convention"] == "w=0 noise, w=1 data"
    with pytest.raises(FileExistsError):
        export_policy(agent, params, OBS, ACT, path)


def test_artifact_verifies_and_matches_the_contract(artifact) -> None:
    folder, manifest, timings = artifact
    assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST_NAME, MODEL_NAME, REFERENCE_IO_NAME])
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # temp folder renamed away
    loaded = PolicyManifest.from_json((folder / MANIFEST_NAME).read_bytes())
    assert loaded == manifest
    loaded.verify_files(folder)
    check_io_contract(loaded)
    loaded.check_compatible(JOINT_NAMES, CHUNK_HORIZON)
    for name in (MODEL_NAME, REFERENCE_IO_NAME):
        data = (folder / name).read_bytes()
        assert loaded.files[name].sha256 == hashlib.sha256(data).hexdigest()
        assert loaded.files[name].size == len(data)
    assert loaded.model_file == MODEL_NAME and loaded.reference_io_file == REFERENCE_IO_NAME
    assert (loaded.version, loaded.parent_version, loaded.training_snapshot) == (3, 2, 1200)
    assert loaded.flow_steps == 10 and loaded.flow_time_convention == "w=0 noise, w=1 data"
    assert loaded.signature is None and loaded.normalization == NORM and loaded.observation == OBS
    created = datetime.fromisoformat(loaded.created_at.replace("Z", "+00:00"))
    assert created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 600
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    assert raw["inputs"][0] == {"name": "state", "shape": [-1, STATE_DIM], "dtype": "float32"}
    (t,) = timings
    assert t.self_check_max_abs_err < 1e-5 and t.total_s >= t.export_s > 0


def test_reference_io_reproduces_through_onnxruntime(policy, artifact) -> None:
    agent, params = policy
    folder, manifest, _ = artifact
    inputs, outputs = load_reference_io(folder / manifest.reference_io_file)
    assert sorted(inputs) == sorted(t.name for t in manifest.inputs) and list(outputs) == [ACTIONS_OUTPUT]
    assert inputs[NOISE_INPUT].shape[0] >= 2
    # The stored outputs are the learner's JAX sampler on the stored inputs...
    np.testing.assert_allclose(outputs[ACTIONS_OUTPUT], _jax(agent, params, inputs), atol=1e-6)
    # ...and the shipped ONNX file reproduces them.
    (got,) = _session(folder / manifest.model_file).run([ACTIONS_OUTPUT], inputs)
    assert np.max(np.abs(got - outputs[ACTIONS_OUTPUT])) < 1e-5


def test_robot_side_decoding_equals_denormalised_jax_sample(policy, artifact) -> None:
    agent, params = policy
    folder, manifest, _ = artifact
    session = _session(folder / manifest.model_file)
    rng = np.random.default_rng(21)
    mean, std = np.asarray(NORM.state_mean), np.asarray(NORM.state_std)
    for task in TASKS:
        raw_state = mean + std * rng.standard_normal(STATE_DIM)  # a raw (un-normalised) sim state
        noise = rng.standard_normal((ACT.horizon, ACT.dim)).astype(np.float32)
        feeds = build_inputs(manifest, raw_state, noise, task=task)
        (out,) = session.run([ACTIONS_OUTPUT], feeds)
        chunk = decode_actions(manifest, out)
        # Independent learner-side path: normalise, append one-hot, JAX sample, de-normalise.
        obs = np.concatenate([(raw_state - mean) / std, np.eye(len(TASKS))[TASKS.index(task)]])[None]
        sample = np.asarray(agent.sample_actions(params, obs.astype(np.float32), noise[None]))[0]
        want = sample * np.asarray(NORM.action_std) + np.asarray(NORM.action_mean)
        assert chunk.shape == (ACT.horizon, ACT.dim)
        assert np.max(np.abs(chunk - want)) < 1e-4


def test_artifact_runs_through_the_robot_ort_backend(policy, artifact) -> None:
    inference = pytest.importorskip("lwd_fleet.inference")
    agent, params = policy
    folder, manifest, _ = artifact
    backend = inference.OnnxRuntimeBackend("cpu", intra_op_threads=1)
    backend.load(inference.open_artifact(folder, expected_version=3))
    try:
        assert backend.manifest == manifest
        assert backend.validate_reference() < 1e-5
        rng = np.random.default_rng(5)
        raw_state = np.asarray(NORM.state_mean) + rng.standard_normal(STATE_DIM)
        noise = rng.standard_normal((ACT.horizon, ACT.dim)).astype(np.float32)
        chunk = backend.infer(inference.PolicyObservation(raw_state, "freezer"), noise)
        obs = np.concatenate([(raw_state - NORM.state_mean) / NORM.state_std, [0.0, 1.0, 0.0]])[None]
        sample = np.asarray(agent.sample_actions(params, obs.astype(np.float32), noise[None]))[0]
        want = sample * np.asarray(NORM.action_std) + np.asarray(NORM.action_mean)
        assert chunk.dtype == np.float32 and np.max(np.abs(chunk - want)) < 1e-4
    finally:
        backend.close()


def test_sign_hook_fills_a_verifiable_signature(policy, tmp_path: Path) -> None:
    signing = pytest.importorskip("lwd_protocol.signing")
    agent, params = policy
    key = signing.generate_private_key()
    folder = tmp_path / "v000004"
    manifest = build_artifact(
        folder, agent, params, normalization=NORM, observation=OBS, version=4, parent_version=3,
        training_snapshot=1300, sign=functools.partial(signing.sign_manifest, private_key=key),
        reference_count=2,
    )  # fmt: skip
    loaded = PolicyManifest.from_json((folder / MANIFEST_NAME).read_bytes())
    assert loaded.signature == manifest.signature and loaded.signature is not None
    trusted = signing.trusted_keys([key.public_key()])
    assert signing.verify_manifest(loaded, trusted) == signing.key_id(key)


def test_self_check_refuses_a_policy_beyond_reference_atol(policy, tmp_path: Path) -> None:
    agent, params = policy
    with pytest.raises(ExportError, match="refusing to publish"):
        build_artifact(
            tmp_path / "v000005", agent, params, normalization=NORM, observation=OBS, version=5,
            parent_version=4, training_snapshot=1, reference_atol=1e-12, reference_count=4,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temp folder remains
