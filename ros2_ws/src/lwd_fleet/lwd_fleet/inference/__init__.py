"""Policy inference on the robot: verified artifacts, one backend interface, engine selection, workers.

  * artifact     -- open_artifact(): manifest + sha256 + I/O contract + robot compatibility -> PolicyArtifact
  * backend      -- PolicyBackend base (policy_io normalisation, checks, reference-I/O validation)
  * ort_backend  -- OnnxRuntimeBackend (CPU; CUDA when the provider exists and is active)
  * trt_backend  -- TensorRTBackend (lazy tensorrt import, on-disk engine cache)
  * select       -- select_backend('auto'|'tensorrt'|'onnxruntime-cuda'|'onnxruntime-cpu') + reason
  * loader       -- PolicyLoader: verify/load/validate/warm up off the control thread
  * worker       -- InferenceWorker: thread with a 1-slot latest-wins request queue
  * synthetic    -- synthetic ONNX policies + manifests for tests, benches and bring-up (needs `onnx`)

Never imports jax, rclpy, onnxruntime or tensorrt at import time.
"""

from lwd_fleet.inference.artifact import PolicyArtifact, PolicyObservation, artifact_dir, open_artifact
from lwd_fleet.inference.backend import (
    BackendUnavailableError,
    InferenceError,
    ModelMismatchError,
    PolicyBackend,
    ReferenceMismatchError,
)
from lwd_fleet.inference.loader import LoadedPolicy, LoaderConfig, LoadFailure, PolicyLoader
from lwd_fleet.inference.ort_backend import OnnxRuntimeBackend
from lwd_fleet.inference.select import BackendSelection, Environment, load_backend, probe_environment, select_backend
from lwd_fleet.inference.trt_backend import TensorRTBackend, engine_cache_key
from lwd_fleet.inference.worker import InferenceRequest, InferenceResult, InferenceWorker

__all__ = [
    "BackendSelection",
    "BackendUnavailableError",
    "Environment",
    "InferenceError",
    "InferenceRequest",
    "InferenceResult",
    "InferenceWorker",
    "LoadFailure",
    "LoadedPolicy",
    "LoaderConfig",
    "ModelMismatchError",
    "OnnxRuntimeBackend",
    "PolicyArtifact",
    "PolicyBackend",
    "PolicyLoader",
    "PolicyObservation",
    "ReferenceMismatchError",
    "TensorRTBackend",
    "artifact_dir",
    "engine_cache_key",
    "load_backend",
    "open_artifact",
    "probe_environment",
    "select_backend",
]
