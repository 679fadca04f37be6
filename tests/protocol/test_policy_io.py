"""The policy I/O contract: input specs, normalisation, one-hot task, reference I/O round trip."""

from __future__ import annotations

import numpy as np
import pytest

from lwd_protocol.manifest import ActionSpec, ManifestError, Normalization, ObservationSpec, PolicyManifest
from lwd_protocol.policy_io import (
    PolicyInputError,
    build_inputs,
    check_io_contract,
    decode_actions,
    input_specs,
    load_reference_io,
    output_specs,
    save_reference_io,
)


def _manifest(tasks=("restocking", "gongfu_tea")) -> PolicyManifest:
    obs = ObservationSpec(state_source="sim_state", state_dim=4, tasks=list(tasks))
    act = ActionSpec(joint_names=["a", "b"], horizon=3)
    return PolicyManifest(
        version=2,
        parent_version=1,
        created_at="t",
        training_snapshot=1,
        model_file="policy.onnx",
        files={},
        inputs=input_specs(obs, act),
        outputs=output_specs(act),
        observation=obs,
        action=act,
        normalization=Normalization([1.0, 2.0, 3.0, 4.0], [2.0] * 4, [10.0, -10.0], [0.5, 2.0]),
    )


def test_inputs_are_normalised_and_task_is_one_hot():
    m = _manifest()
    check_io_contract(m)
    inputs = build_inputs(m, np.array([3.0, 2.0, 1.0, 4.0]), np.zeros(6), task="gongfu_tea")
    np.testing.assert_allclose(inputs["state"], [[1.0, 0.0, -1.0, 0.0]])
    np.testing.assert_array_equal(inputs["task"], [[0.0, 1.0]])
    assert inputs["noise"].shape == (1, 3, 2) and inputs["state"].dtype == np.float32
    assert list(inputs) == [t.name for t in m.inputs]


def test_actions_are_denormalised_per_joint():
    out = decode_actions(_manifest(), np.ones((1, 3, 2)))
    np.testing.assert_allclose(out, [[10.5, -8.0]] * 3)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"state": np.zeros(5)}, "state has 5 values"),
        ({"state": np.array([0, np.nan, 0, 0])}, "NaN"),
        ({"task": "cocktail"}, "task 'cocktail'"),
        ({"noise": np.zeros(5)}, "noise has 5 values"),
    ],
)
def test_bad_observations_are_named(kwargs, needle):
    args = {"state": np.zeros(4), "noise": np.zeros(6), "task": "restocking"} | kwargs
    with pytest.raises(PolicyInputError, match=needle):
        build_inputs(_manifest(), **args)


def test_contract_mismatch_is_refused():
    m = _manifest()
    m.inputs = m.inputs[::-1]
    with pytest.raises(ManifestError, match="policy I/O contract"):
        check_io_contract(m)


def test_reference_io_roundtrip(tmp_path):
    ins = {"state": np.arange(4, dtype=np.float32)[None], "noise": np.ones((1, 3, 2), np.float32)}
    outs = {"actions": np.full((1, 3, 2), 0.25, np.float32)}
    save_reference_io(tmp_path / "ref.npz", ins, outs)
    got_in, got_out = load_reference_io(tmp_path / "ref.npz")
    assert set(got_in) == {"state", "noise"} and set(got_out) == {"actions"}
    np.testing.assert_array_equal(got_out["actions"], outs["actions"])
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ManifestError, match="unreadable"):
        load_reference_io(tmp_path / "bad.npz")
