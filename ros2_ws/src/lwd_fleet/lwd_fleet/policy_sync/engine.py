"""Build the engine a robot will run and prove it computes what the learner exported.

Policy sync does this *before* it reports a version "ready", in the background and with the same
code path the controller uses (``open_artifact`` -> ``load_backend`` -> ``validate_reference``),
so a version that fails here never reaches the control loop. For TensorRT the build also fills the
on-disk engine cache the controller loads from, which makes its swap at the episode boundary fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lwd_fleet.inference.artifact import open_artifact
from lwd_fleet.inference.select import Environment, load_backend
from lwd_protocol.manifest import ManifestError


@dataclass(frozen=True)
class EngineSettings:
    preference: str = "auto"  # auto | tensorrt | onnxruntime-cuda | onnxruntime-cpu
    joint_names: tuple[str, ...] = ()
    horizon: int | None = None
    trt_cache_dir: Path | None = None  # share it with the controller so its load hits the cache
    ort_threads: int | None = 1  # keep validation off the cores the control loop needs


@dataclass(frozen=True)
class EngineCheck:
    backend: str  # PolicyStatus.engine_backend
    reason: str  # why this engine (select_backend's words)
    reference_error: float  # max |engine - reference output|
    build_s: float
    validate_s: float


def build_and_validate(
    folder: Path,
    version: int,
    settings: EngineSettings,
    env: Environment | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> EngineCheck:
    """Load the artifact in `folder` on the configured backend and check it on its reference I/O.

    Raises ManifestError (or the backend's error) naming what is wrong; the engine is closed
    either way: the controller builds its own instance from the cache when it swaps.
    """
    joints: Sequence[str] = settings.joint_names
    artifact = open_artifact(folder, joints, settings.horizon, expected_version=version)
    if artifact.reference_io_path is None:
        raise ManifestError(f"v{version} ships no reference I/O: its engine cannot be validated")
    if on_stage is not None:
        on_stage("building")
    kwargs: dict[str, object] = {"ort_threads": settings.ort_threads}
    if settings.trt_cache_dir is not None:
        kwargs["trt_cache_dir"] = settings.trt_cache_dir
    t0 = time.perf_counter()
    selection = load_backend(settings.preference, artifact, env=env, **kwargs)
    t1 = time.perf_counter()
    try:
        if on_stage is not None:
            on_stage("validating")
        error = selection.backend.validate_reference()
        if error is None:  # open_artifact saw a reference file, so this is a backend contract break
            raise ManifestError(f"v{version}: backend {selection.backend.name} skipped the reference I/O")
    finally:
        selection.backend.close()
    return EngineCheck(selection.backend.name, selection.reason, error, t1 - t0, time.perf_counter() - t1)
