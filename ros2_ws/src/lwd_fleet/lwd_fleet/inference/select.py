"""select_backend: pick the fastest engine this robot can run, and say why in plain words.

auto: TensorRT if ``tensorrt`` (and the CUDA runtime bindings it needs) import and a GPU is
present, else ONNX Runtime with CUDA if that provider exists and a GPU is present, else ONNX
Runtime on CPU. An explicit preference never falls back silently: it raises BackendUnavailableError
with the reason, because an operator who asked for TensorRT must learn that it is not running.
The reason string goes to logs and PolicyStatus.message.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from lwd_fleet.inference.artifact import PolicyArtifact
from lwd_fleet.inference.backend import BackendUnavailableError, PolicyBackend
from lwd_fleet.inference.ort_backend import CUDA, OnnxRuntimeBackend, available_providers
from lwd_fleet.inference.trt_backend import TensorRTBackend, gpu_name_from_cudart, import_cudart, import_tensorrt

PREFERENCES = ("auto", "tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")
DEFAULT_ENGINE_CACHE = Path.home() / ".cache" / "lwd_fleet" / "trt_engines"


@dataclass(frozen=True)
class Environment:
    """What this machine offers. Fields are None/'' when absent, with the reason in *_error."""

    tensorrt_version: str | None
    tensorrt_error: str
    gpu_name: str | None
    gpu_error: str
    ort_providers: tuple[str, ...]

    @property
    def tensorrt_ok(self) -> bool:
        return self.tensorrt_version is not None

    @property
    def ort_cuda_ok(self) -> bool:
        return CUDA in self.ort_providers


def probe_environment() -> Environment:
    trt_version, trt_error = None, ""
    try:
        trt = import_tensorrt()
        import_cudart()
        trt_version = str(trt.__version__)
    except BackendUnavailableError as exc:
        trt_error = str(exc)
    gpu, gpu_error = _detect_gpu()
    return Environment(trt_version, trt_error, gpu, gpu_error, tuple(available_providers()))


def _detect_gpu() -> tuple[str | None, str]:
    try:
        return gpu_name_from_cudart(import_cudart()), ""
    except Exception as exc:
        first_error = str(exc)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, f"no GPU found ({first_error}; no nvidia-smi)"
    try:
        out = (
            subprocess.run(
                [smi, "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"no GPU found (nvidia-smi failed: {exc})"
    return (out[0].strip(), "") if out else (None, "no GPU found (nvidia-smi lists none)")


class BackendSelection(NamedTuple):
    backend: PolicyBackend
    reason: str


def select_backend(
    preference: str = "auto",
    *,
    env: Environment | None = None,
    trt_cache_dir: str | Path = DEFAULT_ENGINE_CACHE,
    fp16: bool = False,
    ort_threads: int | None = None,
) -> BackendSelection:
    """Return an *unloaded* backend and why it was picked. ``env`` defaults to probing this machine."""
    if preference not in PREFERENCES:
        raise ValueError(f"unknown backend preference {preference!r}; choose from {PREFERENCES}")
    env = env or probe_environment()
    no_gpu = env.gpu_error or "no GPU present"

    def trt() -> BackendSelection:
        return BackendSelection(
            TensorRTBackend(trt_cache_dir, fp16=fp16), f"tensorrt {env.tensorrt_version} on {env.gpu_name}"
        )

    def ort_cuda() -> BackendSelection:
        return BackendSelection(OnnxRuntimeBackend("cuda", ort_threads), f"onnxruntime-cuda on {env.gpu_name}")

    def ort_cpu(why: str) -> BackendSelection:
        return BackendSelection(OnnxRuntimeBackend("cpu", ort_threads), f"onnxruntime-cpu: {why}")

    if preference == "tensorrt":
        if not env.tensorrt_ok or env.gpu_name is None:
            raise BackendUnavailableError(f"tensorrt requested but unavailable: {env.tensorrt_error or no_gpu}")
        return trt()._replace(reason=f"tensorrt {env.tensorrt_version} on {env.gpu_name} (requested)")
    if preference == "onnxruntime-cuda":
        if not env.ort_cuda_ok or env.gpu_name is None:
            why = no_gpu if env.ort_cuda_ok else f"onnxruntime providers {list(env.ort_providers)} lack {CUDA}"
            raise BackendUnavailableError(f"onnxruntime-cuda requested but unavailable: {why}")
        return ort_cuda()._replace(reason=f"onnxruntime-cuda on {env.gpu_name} (requested)")
    if preference == "onnxruntime-cpu":
        return ort_cpu("requested")

    # auto
    if env.tensorrt_ok and env.gpu_name is not None:
        sel = trt()
        return sel._replace(reason=f"auto: {sel.reason} (TensorRT importable and a GPU is present)")
    trt_why = env.tensorrt_error if not env.tensorrt_ok else no_gpu
    if env.ort_cuda_ok and env.gpu_name is not None:
        sel = ort_cuda()
        return sel._replace(reason=f"auto: {sel.reason} (TensorRT skipped: {trt_why})")
    cuda_why = no_gpu if env.ort_cuda_ok else f"onnxruntime has no {CUDA}"
    return ort_cpu(f"auto: TensorRT skipped ({trt_why}); CUDA provider skipped ({cuda_why})")


def load_backend(
    preference: str, artifact: PolicyArtifact, *, env: Environment | None = None, **kwargs: Any
) -> BackendSelection:
    """select_backend + load a verified artifact.

    With 'auto', an engine that fails to load (TensorRT cannot parse or build the graph, CUDA
    provider inactive) falls back to the next one, TensorRT -> ORT-CUDA -> ORT-CPU, and the reason
    names every failure. An explicit preference never falls back. Errors of the artifact itself
    (a ManifestError from the last engine tried) propagate unchanged.
    """
    env = env or probe_environment()
    first = select_backend(preference, env=env, **kwargs)
    attempts = [first]
    if preference == "auto" and first.backend.name == "tensorrt" and env.ort_cuda_ok and env.gpu_name:
        attempts.append(select_backend("onnxruntime-cuda", env=env, **kwargs))
    if preference == "auto" and first.backend.name != "onnxruntime-cpu":
        attempts.append(select_backend("onnxruntime-cpu", env=env, **kwargs))
    failures: list[str] = []
    for i, sel in enumerate(attempts):
        try:
            sel.backend.load(artifact)
        except Exception as exc:
            if i == len(attempts) - 1:
                raise
            failures.append(f"{sel.backend.name} failed to load: {type(exc).__name__}: {exc}")
            sel.backend.close()
            continue
        return sel._replace(reason=f"{sel.reason}; after {'; '.join(failures)}") if failures else sel
    raise AssertionError("unreachable: the last attempt returns or raises")
