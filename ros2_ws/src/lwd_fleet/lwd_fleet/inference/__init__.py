"""Policy inference on the robot: one backend interface, engine selection, a non-blocking worker.

  * spec         -- ModelSpec: inputs/shapes/normalisation stats from a manifest-like dict
  * backend      -- PolicyBackend base (normalisation, checks), BackendUnavailableError, InferenceError
  * ort_backend  -- OnnxRuntimeBackend (CPU; CUDA when the provider exists and is active)
  * trt_backend  -- TensorRTBackend (lazy tensorrt import, on-disk engine cache)
  * select       -- select_backend('auto'|'tensorrt'|'onnxruntime-cuda'|'onnxruntime-cpu') + reason
  * worker       -- InferenceWorker: thread with a 1-slot latest-wins request queue

Never imports jax, rclpy or tensorrt at import time.
"""

from lwd_fleet.inference.backend import BackendUnavailableError, InferenceError, PolicyBackend
from lwd_fleet.inference.ort_backend import OnnxRuntimeBackend
from lwd_fleet.inference.select import BackendSelection, Environment, load_backend, probe_environment, select_backend
from lwd_fleet.inference.spec import ModelSpec, SpecError
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
    "ModelSpec",
    "OnnxRuntimeBackend",
    "PolicyBackend",
    "SpecError",
    "TensorRTBackend",
    "engine_cache_key",
    "load_backend",
    "probe_environment",
    "select_backend",
]
