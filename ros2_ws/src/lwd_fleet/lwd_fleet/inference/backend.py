"""PolicyBackend: one interface over ONNX Runtime (CPU/CUDA) and TensorRT.

The base class owns everything that must be identical across engines -- input normalisation
from the manifest's stats, shape checks, output de-normalisation, the non-finite check -- so a
backend only implements loading a graph and running one feed dict.
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lwd_fleet.inference.spec import ModelSpec


class BackendUnavailableError(RuntimeError):
    """This backend cannot run here (library missing, no GPU, provider inactive). Says why."""


class InferenceError(RuntimeError):
    """A loaded model produced something unusable (non-finite or mis-shaped chunk)."""


class PolicyBackend(abc.ABC):
    """load(onnx, manifest) once, then infer(obs, noise) -> (H, A) float32 chunk per request."""

    def __init__(self) -> None:
        self._spec: ModelSpec | None = None
        self.onnx_path: Path | None = None

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Engine name as PolicyStatus.engine_backend reports it."""

    @property
    def spec(self) -> ModelSpec:
        if self._spec is None:
            raise RuntimeError(f"{self.name}: no model loaded")
        return self._spec

    @property
    def loaded(self) -> bool:
        return self._spec is not None

    def load(self, onnx_path: str | Path, manifest: Mapping[str, Any] | ModelSpec) -> None:
        spec = manifest if isinstance(manifest, ModelSpec) else ModelSpec.from_manifest(manifest)
        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        self._load_model(path, spec)
        self._spec, self.onnx_path = spec, path

    def infer(self, obs: Mapping[str, Any], noise: Any) -> np.ndarray:
        spec = self.spec
        out = self._run(spec.prepare_feeds(obs, noise))
        chunk = spec.finish_output(out)
        if not np.all(np.isfinite(chunk)):
            raise InferenceError(f"{self.name}: policy produced non-finite actions")
        return chunk

    def warmup(self, iterations: int = 3) -> list[float]:
        """Run zero inputs a few times (first runs allocate / autotune). Returns seconds per run."""
        spec = self.spec
        obs = {i.name: np.zeros([1 if d is None else d for d in i.shape], i.dtype) for i in spec.obs_inputs}
        # zeros may be "out of distribution" after normalisation: use the stats' means instead
        for name, stats in spec.normalization.items():
            with contextlib.suppress(ValueError):  # stats shaped unlike the batch-1 input: zeros do
                obs[name] = np.broadcast_to(stats.mean, obs[name].shape).copy()
        noise = np.zeros((spec.horizon, spec.action_dim), np.float32)
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            self._run(spec.prepare_feeds(obs, noise))
            times.append(time.perf_counter() - t0)
        return times

    def close(self) -> None:  # noqa: B027 -- optional hook, default no-op
        """Free engine resources (GPU buffers). Safe to call twice."""

    @abc.abstractmethod
    def _load_model(self, path: Path, spec: ModelSpec) -> None: ...

    @abc.abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one feed dict; return the raw action output."""
