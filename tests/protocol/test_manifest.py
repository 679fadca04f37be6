"""The policy manifest round-trips and refuses inconsistent or tampered artifacts by name."""

from __future__ import annotations

import json

import pytest

from lwd_protocol.manifest import (
    ActionSpec,
    ManifestError,
    Normalization,
    ObservationSpec,
    PolicyManifest,
    TensorSpec,
    file_entry,
)
from lwd_protocol.robot_spec import JOINT_NAMES


def _manifest(tmp_path) -> PolicyManifest:
    (tmp_path / "policy.onnx").write_bytes(b"onnx-bytes" * 100)
    (tmp_path / "reference_io.npz").write_bytes(b"npz-bytes")
    return PolicyManifest(
        version=5,
        parent_version=4,
        created_at="2026-11-21T00:00:00Z",
        training_snapshot=17,
        model_file="policy.onnx",
        files={n: file_entry(tmp_path / n) for n in ("policy.onnx", "reference_io.npz")},
        inputs=[TensorSpec("state", [-1, 16]), TensorSpec("noise", [-1, 30, 16])],
        outputs=[TensorSpec("actions", [-1, 30, 16])],
        observation=ObservationSpec(),
        action=ActionSpec(),
        normalization=Normalization([0.0] * 16, [1.0] * 16, [0.0] * 16, [0.5] * 16),
        reference_io_file="reference_io.npz",
    )


def test_roundtrip_and_file_verification(tmp_path):
    manifest = _manifest(tmp_path)
    again = PolicyManifest.from_json(manifest.to_json())
    assert again == manifest
    again.verify_files(tmp_path)
    again.check_compatible(JOINT_NAMES, horizon=30)


def test_signing_payload_excludes_signature_and_is_canonical(tmp_path):
    manifest = _manifest(tmp_path)
    payload = manifest.signing_payload()
    manifest.signature = {"alg": "ed25519", "key_id": "k", "value": "AAAA"}
    assert manifest.signing_payload() == payload
    canonical = json.dumps(json.loads(payload), sort_keys=True, separators=(",", ":")).encode()
    assert payload == canonical and json.loads(payload)["version"] == 5
    assert "signature" not in json.loads(payload)


def test_tampered_file_is_detected(tmp_path):
    manifest = _manifest(tmp_path)
    (tmp_path / "policy.onnx").write_bytes(b"onnx-bytes" * 99 + b"evil-bytes")
    with pytest.raises(ManifestError, match=r"policy\.onnx.*sha256 mismatch"):
        manifest.verify_files(tmp_path)


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda d: d.pop("version"), "lacks required field 'version'"),
        (lambda d: d.update(version="5"), "'version' must be an integer"),
        (lambda d: d.update(parent_version=9), "parent_version"),
        (lambda d: d.update(model_file="other.onnx"), "model_file"),
        (lambda d: d["normalization"].update(state_std=[0.0] * 16), "state_std must be strictly positive"),
        (lambda d: d["normalization"].update(action_mean=[0.0] * 3), "action_mean has 3 values"),
        (lambda d: d.update(format_version=99), "format version 99"),
        (lambda d: d.update(format_version=1), "format version 1 is not supported"),
        (lambda d: d["action"].update(relative_dims=[0, 1], relative_state_index=[0]), "relative_dims has 2 entries"),
        (lambda d: d["action"].update(relative_dims=[16], relative_state_index=[0]), "relative_dims"),
        (lambda d: d["action"].update(relative_dims=[0], relative_state_index=[99]), "relative_state_index"),
        (lambda d: d["normalization"].update(action_std=[1.0] * 31 * 16), "action_std has 496 values"),
        (lambda d: d["files"].update({"../x": d["files"]["policy.onnx"]}), "invalid artifact file name"),
    ],
)
def test_invalid_manifests_name_the_problem(tmp_path, mutate, match):
    data = _manifest(tmp_path).to_dict()
    mutate(data)
    with pytest.raises(ManifestError, match=match):
        PolicyManifest.from_json(json.dumps(data))


def test_not_json_is_refused():
    with pytest.raises(ManifestError, match="not valid JSON"):
        PolicyManifest.from_json(b"\xff\xfe garbage")


def test_incompatible_robot_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="do not match"):
        _manifest(tmp_path).check_compatible(JOINT_NAMES[:14])
