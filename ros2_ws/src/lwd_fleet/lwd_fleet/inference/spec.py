"""What a policy artifact promises: input names/shapes, the noise input, output, normalisation.

Parsed from a manifest-like dict so the backends never hard-code shapes or statistics:

    {
      "inputs": {"obs": {"shape": [1, 64]},                       # dims: int, or null for batch
                 "noise": {"shape": [1, 30, 16]}},
      "noise_input": "noise",
      "output": "actions",                                          # optional: first model output
      "normalization": {"obs": {"mean": [...], "std": [...]}},    # one entry per observation input
      "raw_inputs": [],                      # observation inputs fed without normalisation (uint8)
      "action_normalization": {"mean": [...], "std": [...]},      # optional: chunk = out*std + mean
    }

``horizon``/``action_dim`` come from the noise shape (its last two dims). Every observation
input must have statistics or be listed in ``raw_inputs``: a forgotten entry must fail loudly,
not silently feed unnormalised data to a policy trained on normalised data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STD_FLOOR = 1e-6  # constant features have std 0; dividing by it would blow them up


class SpecError(ValueError):
    """The manifest-like dict is inconsistent or an input does not match it."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | None, ...]  # None = dynamic (batch)
    dtype: np.dtype

    def resolve(self, arr: np.ndarray) -> np.ndarray:
        """Reshape ``arr`` to this input's shape with batch 1 and cast to the declared dtype."""
        return np.ascontiguousarray(self.reshape(arr), dtype=self.dtype)

    def reshape(self, arr: np.ndarray) -> np.ndarray:
        """``arr`` in this input's shape with batch 1 (a missing batch dim is added)."""
        dims = [1 if d is None and i == 0 else d for i, d in enumerate(self.shape)]
        if any(d is None for d in dims):
            target: tuple[int, ...] = (1, *arr.shape) if arr.ndim == len(dims) - 1 else arr.shape
            if len(target) != len(dims) or any(d is not None and d != t for d, t in zip(dims, target, strict=True)):
                raise SpecError(f"input {self.name!r}: shape {arr.shape} does not fit {self.shape}")
        else:
            target = tuple(int(d) for d in dims)  # type: ignore[arg-type]
            if arr.size != math.prod(target):
                raise SpecError(f"input {self.name!r}: got shape {arr.shape}, expected {self.shape}")
        return arr.reshape(target)


@dataclass(frozen=True)
class Stats:
    mean: np.ndarray
    std: np.ndarray  # already floored

    @classmethod
    def parse(cls, name: str, entry: Mapping[str, Any]) -> Stats:
        try:
            mean = np.asarray(entry["mean"], dtype=np.float64)
            std = np.asarray(entry["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"normalisation stats for {name!r} need numeric 'mean' and 'std': {exc}") from exc
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std >= 0)):
            raise SpecError(f"normalisation stats for {name!r} must be finite with std >= 0")
        try:
            np.broadcast_shapes(mean.shape, std.shape)
        except ValueError as exc:
            raise SpecError(f"mean/std shapes of {name!r} do not broadcast: {mean.shape} vs {std.shape}") from exc
        return cls(mean, np.maximum(std, STD_FLOOR))

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        return x * self.std + self.mean


@dataclass(frozen=True)
class ModelSpec:
    inputs: tuple[InputSpec, ...]
    noise_input: str
    output: str | None
    horizon: int
    action_dim: int
    normalization: Mapping[str, Stats]
    raw_inputs: frozenset[str]
    action_stats: Stats | None

    @property
    def obs_inputs(self) -> tuple[InputSpec, ...]:
        return tuple(i for i in self.inputs if i.name != self.noise_input)

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise SpecError(f"no input named {name!r}")

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> ModelSpec:
        raw_inputs_field = manifest.get("inputs")
        if not raw_inputs_field:
            raise SpecError("manifest needs 'inputs'")
        items: Sequence[tuple[str, Mapping[str, Any]]]
        if isinstance(raw_inputs_field, Mapping):
            items = list(raw_inputs_field.items())
        else:  # list of {"name", "shape", "dtype"}
            items = [(str(e["name"]), e) for e in raw_inputs_field]
        inputs = []
        for name, entry in items:
            shape = tuple(None if d is None or isinstance(d, str) else int(d) for d in entry["shape"])
            if any(d is not None and d < 1 for d in shape):
                raise SpecError(f"input {name!r} has a non-positive dim: {shape}")
            inputs.append(InputSpec(name, shape, np.dtype(entry.get("dtype", "float32"))))
        names = [i.name for i in inputs]
        if len(set(names)) != len(names):
            raise SpecError(f"duplicate input names: {names}")
        noise = manifest.get("noise_input", "noise")
        if noise not in names:
            raise SpecError(f"noise input {noise!r} is not among the inputs {names}")
        noise_shape = next(i.shape for i in inputs if i.name == noise)
        if len(noise_shape) < 2 or noise_shape[-1] is None or noise_shape[-2] is None:
            raise SpecError(f"noise input must end in static (horizon, action_dim), got {noise_shape}")
        horizon, action_dim = int(noise_shape[-2]), int(noise_shape[-1])

        raw = frozenset(manifest.get("raw_inputs", ()))
        stats_in = manifest.get("normalization", {}) or {}
        obs_names = [n for n in names if n != noise]
        unknown = (set(stats_in) | raw) - set(obs_names)
        if unknown:
            raise SpecError(f"normalisation/raw entries for unknown inputs: {sorted(unknown)}")
        missing = [n for n in obs_names if n not in stats_in and n not in raw]
        if missing:
            raise SpecError(f"no normalisation stats for observation inputs {missing} (list them in raw_inputs "
                            "if the graph normalises them itself)")
        stats = {n: Stats.parse(n, e) for n, e in stats_in.items()}
        act = manifest.get("action_normalization")
        action_stats = Stats.parse("action", act) if act else None
        return cls(tuple(inputs), noise, manifest.get("output"), horizon, action_dim, stats, raw, action_stats)

    def prepare_feeds(self, obs: Mapping[str, Any], noise: Any) -> dict[str, np.ndarray]:
        """Normalise and shape observations and noise into the model's feed dict."""
        expected = {i.name for i in self.obs_inputs}
        if set(obs) != expected:
            raise SpecError(f"observation keys {sorted(obs)} != model inputs {sorted(expected)}")
        feeds = {}
        for spec in self.obs_inputs:
            x = spec.reshape(np.asarray(obs[spec.name]))
            if spec.name in self.normalization:
                try:
                    x = self.normalization[spec.name].normalize(x.astype(np.float64))
                except ValueError as exc:
                    raise SpecError(f"input {spec.name!r} {x.shape} does not match its stats: {exc}") from exc
            feeds[spec.name] = spec.resolve(x)
        n = np.asarray(noise, dtype=np.float32)
        if n.size != self.horizon * self.action_dim:
            raise SpecError(f"noise has shape {n.shape}, expected ({self.horizon}, {self.action_dim})")
        feeds[self.noise_input] = self.input(self.noise_input).resolve(n)
        return feeds

    def finish_output(self, out: np.ndarray) -> np.ndarray:
        """Model output -> (H, A) float32 chunk in joint units."""
        arr = np.asarray(out)
        if arr.size != self.horizon * self.action_dim:
            raise SpecError(f"model output has shape {arr.shape}, expected ({self.horizon}, {self.action_dim})")
        chunk = arr.reshape(self.horizon, self.action_dim).astype(np.float64)
        if self.action_stats is not None:
            chunk = self.action_stats.denormalize(chunk)
        return chunk.astype(np.float32)
