"""PolicyBackend: one interface over ONNX Runtime (CPU/CUDA) and TensorRT.

The base class owns everything that must be identical across engines, all through the shared
contract in ``lwd_protocol.policy_io``: building the normalised input tensors from a raw
observation (statistics from the artifact's manifest), de-normalising the action output, the
non-finite check, and the reference-I/O validation. A backend only implements loading a graph
and running one feed dict. ``load`` accepts only a verified :class:`PolicyArtifact`.
"""

from __future__ import annotations

import abc
import time
from typing import Any

import numpy as np

from lwd_fleet.inference.artifact import PolicyArtifact, PolicyObservation
from lwd_protocol.manifest import ManifestError, PolicyManifest
from lwd_protocol.policy_io import ACTIONS_OUTPUT, NOISE_INPUT, build_inputs, decode_actions, load_reference_io


class BackendUnavailableError(RuntimeError):
    """This backend cannot run here (library missing, no GPU, provider inactive). Says why."""


class InferenceError(RuntimeError):
    """A loaded model produced something unusable (non-finite or mis-shaped chunk)."""


class ModelMismatchError(ManifestError):
    """The ONNX graph does not match its own manifest (names, ranks, static dims, outputs)."""


class ReferenceMismatchError(ManifestError):
    """The engine's output on the artifact's reference inputs differs from the reference outputs."""


class PolicyBackend(abc.ABC):
    """``load(artifact)`` once, then ``infer(observation, noise)`` -> (H, A) float32 joint targets."""

    def __init__(self) -> None:
        self._artifact: PolicyArtifact | None = None

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Engine name as PolicyStatus.engine_backend reports it."""

    @property
    def artifact(self) -> PolicyArtifact:
        if self._artifact is None:
            raise RuntimeError(f"{self.name}: no policy loaded")
        return self._artifact

    @property
    def manifest(self) -> PolicyManifest:
        return self.artifact.manifest

    @property
    def loaded(self) -> bool:
        return self._artifact is not None

    def load(self, artifact: PolicyArtifact) -> None:
        if not isinstance(artifact, PolicyArtifact):
            raise TypeError(f"{self.name}: load() takes a PolicyArtifact from open_artifact(), got {type(artifact)}")
        if not artifact.model_path.is_file():  # removed after verification
            raise FileNotFoundError(f"ONNX model not found: {artifact.model_path}")
        self._load_model(artifact)
        self._artifact = artifact

    def infer(self, observation: PolicyObservation, noise: Any) -> np.ndarray:
        """Raw observation + (H, A) Gaussian noise -> (H, A) float32 chunk in joint units."""
        manifest = self.manifest
        feeds = build_inputs(manifest, observation.state, noise, observation.task, observation.images)
        raw = np.asarray(self._run(feeds))
        if not np.all(np.isfinite(raw)):
            raise InferenceError(f"{self.name}: policy v{manifest.version} produced non-finite actions")
        chunk = decode_actions(manifest, raw, observation.state)
        if not np.all(np.isfinite(chunk)):
            raise InferenceError(f"{self.name}: de-normalised actions of v{manifest.version} are non-finite")
        return chunk.astype(np.float32)

    def validate_reference(self) -> float | None:
        """Run the artifact's reference inputs; raise ReferenceMismatchError beyond ``reference_atol``.

        Returns the max absolute error, or None when the artifact ships no reference I/O. This is
        what catches an engine that builds but computes something else (precision, a bad build).
        """
        path = self.artifact.reference_io_path
        if path is None:
            return None
        inputs, outputs = load_reference_io(path)
        if ACTIONS_OUTPUT not in outputs:
            raise ManifestError(f"reference I/O {path.name} has no out/{ACTIONS_OUTPUT}")
        expected_names = [t.name for t in self.manifest.inputs]
        if sorted(inputs) != sorted(expected_names):
            raise ManifestError(f"reference I/O inputs {sorted(inputs)} != manifest inputs {sorted(expected_names)}")
        want = np.asarray(outputs[ACTIONS_OUTPUT], dtype=np.float64)
        feeds = {name: np.ascontiguousarray(inputs[name]) for name in expected_names}
        batch = int(feeds[NOISE_INPUT].shape[0])
        got = np.concatenate(
            [np.asarray(self._run({k: v[i : i + 1] for k, v in feeds.items()}), np.float64) for i in range(batch)]
        )
        if got.shape != want.shape:
            raise ReferenceMismatchError(f"{self.name}: reference output shape {got.shape} != {want.shape}")
        err = float(np.max(np.abs(got - want))) if want.size else 0.0
        atol = self.manifest.reference_atol
        if not err <= atol:
            raise ReferenceMismatchError(
                f"{self.name}: output on the reference inputs differs by {err:.3g} (> reference_atol {atol:g})"
            )
        return err

    def warmup(self, iterations: int = 3) -> list[float]:
        """Run mean-state inputs a few times (first runs allocate / autotune). Returns seconds per run."""
        manifest = self.manifest
        obs = manifest.observation
        images = None
        if obs.cameras:
            h, w = obs.image_size
            images = {cam: np.zeros((h, w, 3), np.uint8) for cam in obs.cameras}
        observation = PolicyObservation(
            np.asarray(manifest.normalization.state_mean), obs.tasks[0] if obs.tasks else "", images
        )
        noise = np.zeros((manifest.action.horizon, manifest.action.dim), np.float32)
        feeds = build_inputs(manifest, observation.state, noise, observation.task, observation.images)
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            self._run(feeds)
            times.append(time.perf_counter() - t0)
        return times

    def close(self) -> None:  # noqa: B027 -- optional hook, default no-op
        """Free engine resources (GPU buffers). Safe to call twice."""

    @abc.abstractmethod
    def _load_model(self, artifact: PolicyArtifact) -> None: ...

    @abc.abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch-1 feed dict (contract tensor names); return the raw ``actions`` output."""
