"""open_artifact refuses every unverified or foreign policy by name; PolicyLoader loads off-thread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lwd_fleet.inference import (
    LoadedPolicy,
    LoaderConfig,
    LoadFailure,
    PolicyLoader,
    PolicyObservation,
    artifact_dir,
    open_artifact,
)
from lwd_protocol.manifest import ActionSpec, ManifestError
from lwd_protocol.robot_spec import JOINT_NAMES
from lwd_protocol.store import MANIFEST_NAME, MODEL_NAME

pytest.importorskip("onnx", reason="the `onnx` package builds the test models")
from lwd_fleet.inference.synthetic import drift_policy

WAIT = 30.0


def write(tmp_path: Path, version: int = 2, **kwargs) -> Path:
    return drift_policy(version, 0.01, **kwargs).write(artifact_dir(tmp_path, version))


def edit_manifest(folder: Path, change) -> None:
    data = json.loads((folder / MANIFEST_NAME).read_text())
    change(data)
    (folder / MANIFEST_NAME).write_text(json.dumps(data))


def test_a_good_artifact_opens(tmp_path: Path) -> None:
    folder = write(tmp_path)
    assert folder == tmp_path / "v000002"
    art = open_artifact(folder, JOINT_NAMES, 30, expected_version=2)
    assert art.version == 2 and art.model_path == folder / MODEL_NAME and art.state_source == "joint_positions"
    assert not art.needs_images and art.cameras == () and len(art.content_hash) == 64


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda f: (f / MANIFEST_NAME).unlink(), "no manifest.json"),
        (lambda f: (f / MANIFEST_NAME).write_text("{not json"), "not valid JSON"),
        (lambda f: (f / MODEL_NAME).write_bytes((f / MODEL_NAME).read_bytes()[:-1] + b"x"), "sha256 mismatch"),
        (lambda f: (f / MODEL_NAME).write_bytes(b"short"), "bytes, manifest says"),
        (lambda f: (f / MODEL_NAME).unlink(), "'policy.onnx' is missing"),
        (lambda f: edit_manifest(f, lambda d: d["inputs"].reverse()), "policy I/O contract"),
        (lambda f: edit_manifest(f, lambda d: d["observation"].update(state_source="lidar")), "state_source"),
        (lambda f: edit_manifest(f, lambda d: d.update(format_version=99)), "format version 99"),
    ],
)
def test_damaged_artifacts_are_refused_by_name(tmp_path: Path, damage, needle: str) -> None:
    folder = write(tmp_path)
    damage(folder)
    with pytest.raises(ManifestError, match=needle):
        open_artifact(folder)


def test_foreign_artifacts_are_refused(tmp_path: Path) -> None:
    folder = write(tmp_path, 3)
    with pytest.raises(ManifestError, match="is version 3, expected version 4"):
        open_artifact(folder, expected_version=4)
    with pytest.raises(ManifestError, match="do not match the robot's"):
        open_artifact(folder, joint_names=JOINT_NAMES[::-1])
    with pytest.raises(ManifestError, match="does not match the controller's 20"):
        open_artifact(folder, horizon=20)
    short = drift_policy(5, 0.0, action=ActionSpec(horizon=10)).write(tmp_path / "short")
    with pytest.raises(ManifestError, match="action horizon 10"):
        open_artifact(short)


def test_loader_loads_in_the_background_and_reports_failures(tmp_path: Path) -> None:
    good = write(tmp_path, 2, state_std=3.0)
    bad = write(tmp_path, 3)
    model = (bad / MODEL_NAME).read_bytes()
    (bad / MODEL_NAME).write_bytes(model[:-8] + b"tampered")  # same size, other bytes
    loader = PolicyLoader(LoaderConfig(preference="onnxruntime-cpu", warmup_iterations=2))
    try:
        loader.request(good, 2)
        assert loader.wait_idle(WAIT)
        loaded = loader.poll()
        assert isinstance(loaded, LoadedPolicy) and loaded.version == 2
        assert loaded.backend.name == "onnxruntime-cpu" and "requested" in loaded.reason
        assert loaded.reference_error is not None and loaded.reference_error <= 1e-4
        chunk = loaded.backend.infer(PolicyObservation(np.ones(16)), np.zeros((30, 16), np.float32))
        np.testing.assert_allclose(chunk[0], 1.01, atol=1e-5)
        loader.request(bad, 3)
        assert loader.wait_idle(WAIT)
        failure = loader.poll()
        assert isinstance(failure, LoadFailure) and failure.version == 3 and "sha256" in failure.error
        assert loader.poll() is None and loader.in_progress is None
    finally:
        loader.close()
