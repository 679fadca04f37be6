"""A valid policy manifest (JSON) for the hardening tests and fuzz seeds."""

from __future__ import annotations

import hashlib

from lwd_protocol.manifest import ActionSpec, FileEntry, Normalization, ObservationSpec, PolicyManifest
from lwd_protocol.policy_io import input_specs, output_specs


def sample_manifest() -> PolicyManifest:
    obs, act = ObservationSpec(), ActionSpec()
    model = b"onnx-model-bytes"
    return PolicyManifest(
        version=3,
        parent_version=2,
        created_at="2026-11-21T00:00:00Z",
        training_snapshot=5,
        model_file="policy.onnx",
        files={"policy.onnx": FileEntry(hashlib.sha256(model).hexdigest(), len(model))},
        inputs=input_specs(obs, act),
        outputs=output_specs(act),
        observation=obs,
        action=act,
        normalization=Normalization([0.0] * obs.state_dim, [1.0] * obs.state_dim, [0.0] * act.dim, [1.0] * act.dim),
    )


def sample_manifest_json() -> str:
    return sample_manifest().to_json()
