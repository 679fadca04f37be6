"""TensorRTBackend: builds (once) and runs a TensorRT engine from the policy's ONNX.

Engines are specific to the GPU model and the TensorRT version, and building one takes from
seconds to minutes, so built engines are cached on disk under a key of the artifact's content
hash (sha256 over its verified file digests) + GPU name + TensorRT version + precision: a new
policy version, a different GPU or a TensorRT upgrade each get a fresh build, and a restart of
the same setup loads the cached engine. Writes are atomic (temp file + rename) so a crash mid-write never leaves a
truncated engine that would be loaded later; an engine that fails to deserialise is rebuilt.

``tensorrt`` and the CUDA runtime bindings (``cuda-python``: ``cuda.bindings.runtime`` or the
older ``cuda.cudart``) are imported only in ``load``; without them this raises
BackendUnavailableError with the reason. Written for the TensorRT 10 tensor API
(set_tensor_address / execute_async_v3). Batch size is 1; dynamic batch dims are fixed to 1 in
the optimisation profile.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from lwd_fleet.inference.artifact import PolicyArtifact
from lwd_fleet.inference.backend import BackendUnavailableError, ModelMismatchError, PolicyBackend
from lwd_protocol.policy_io import ACTIONS_OUTPUT


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except Exception as exc:  # ImportError, or OSError for missing libnvinfer
        raise BackendUnavailableError(f"tensorrt not importable: {type(exc).__name__}: {exc}") from exc
    return trt


def import_cudart() -> ModuleType:
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except Exception:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]
        except Exception as exc:
            raise BackendUnavailableError(f"CUDA runtime bindings (cuda-python) not importable: {exc}") from exc
    return cudart


def engine_cache_key(model_digest: str, gpu_name: str, trt_version: str, precision: str) -> str:
    """File-name-safe key: model content digest (hex) + GPU model + TensorRT version + precision."""
    digest = re.sub(r"[^0-9a-f]", "", model_digest.lower())
    if len(digest) < 16:
        raise ValueError(f"model digest {model_digest!r} is not a hex content hash")
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "unknown-gpu"
    ver = re.sub(r"[^A-Za-z0-9.]+", "-", trt_version)
    return f"{digest}_{gpu}_trt{ver}_{precision}"


def _cuda_check(result: Any) -> Any:
    """cuda-python calls return (err, *values); raise on err, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    code = int(err) if not hasattr(err, "value") else int(err.value)
    if code != 0:
        raise RuntimeError(f"CUDA error {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def gpu_name_from_cudart(cudart: ModuleType, device: int = 0) -> str:
    count = _cuda_check(cudart.cudaGetDeviceCount())
    if count <= device:
        raise BackendUnavailableError(f"no CUDA device {device} (found {count})")
    props = _cuda_check(cudart.cudaGetDeviceProperties(device))
    name = props.name
    return name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)


class TensorRTBackend(PolicyBackend):
    def __init__(
        self, cache_dir: str | Path, fp16: bool = False, workspace_bytes: int = 1 << 30, device: int = 0
    ) -> None:
        super().__init__()
        self.cache_dir = Path(cache_dir)
        self.fp16 = fp16
        self.workspace_bytes = workspace_bytes
        self.device = device
        self.engine_path: Path | None = None
        self.built_engine = False  # False when the engine came from the cache
        self._trt: ModuleType | None = None
        self._cudart: ModuleType | None = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._device_ptrs: dict[str, int] = {}
        self._host: dict[str, np.ndarray] = {}
        self._inputs: list[str] = []
        self._output: str | None = None
        self._device_thread: int | None = None  # thread that last made self.device current

    @property
    def name(self) -> str:
        return "tensorrt"

    # ----------------------------------------------------------------- load
    def _load_model(self, artifact: PolicyArtifact) -> None:
        trt = import_tensorrt()
        cudart = import_cudart()
        _cuda_check(cudart.cudaSetDevice(self.device))
        self._device_thread = threading.get_ident()
        gpu = gpu_name_from_cudart(cudart, self.device)
        self.close()
        self._trt, self._cudart = trt, cudart
        logger = trt.Logger(trt.Logger.WARNING)
        path = artifact.model_path
        precision = "fp16" if self.fp16 else "fp32"
        key = engine_cache_key(artifact.content_hash, gpu, trt.__version__, precision)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        engine_path = self.cache_dir / f"{key}.engine"

        runtime = trt.Runtime(logger)
        engine = None
        if engine_path.is_file():
            try:
                engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
            except Exception:  # corrupt or incompatible cache entry: rebuild below
                engine = None
            self.built_engine = False
        if engine is None:  # not cached, or stale/corrupt: build
            plan = self._build(trt, logger, artifact)
            _atomic_write(engine_path, plan)
            _atomic_write(
                engine_path.with_suffix(".json"),
                json.dumps(
                    {
                        "onnx": str(path),
                        "policy_version": artifact.version,
                        "content_hash": artifact.content_hash,
                        "gpu": gpu,
                        "tensorrt": trt.__version__,
                        "precision": precision,
                    },
                    indent=1,
                ).encode(),
            )
            engine = runtime.deserialize_cuda_engine(plan)
            self.built_engine = True
            if engine is None:
                raise BackendUnavailableError("TensorRT could not deserialise the engine it just built")
        self._engine, self.engine_path = engine, engine_path
        self._setup_io(trt, cudart, engine, artifact)

    def _build(self, trt: ModuleType, logger: Any, artifact: PolicyArtifact) -> bytes:
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(artifact.model_path)):  # from the file: external data resolves
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelMismatchError(f"TensorRT could not parse the ONNX model: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        if self.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        needs_profile = False
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = tuple(tensor.shape)
            if any(d < 0 for d in dims):
                needs_profile = True
                fixed = _batch1_shape(artifact, tensor.name)
                if len(fixed) != len(dims):
                    raise ModelMismatchError(f"input {tensor.name!r}: model shape {dims}, manifest shape {fixed}")
                profile.set_shape(tensor.name, fixed, fixed, fixed)
        if needs_profile:
            config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendUnavailableError("TensorRT engine build failed (see TensorRT log)")
        return bytes(plan)

    def _setup_io(self, trt: ModuleType, cudart: ModuleType, engine: Any, artifact: PolicyArtifact) -> None:
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        declared = sorted(t.name for t in artifact.manifest.inputs)
        if sorted(inputs) != declared:
            raise ModelMismatchError(f"engine inputs {sorted(inputs)} != manifest inputs {declared}")
        output = ACTIONS_OUTPUT
        if output not in outputs:
            raise ModelMismatchError(f"engine has no output {output!r}; outputs: {outputs}")
        for name in inputs:
            context.set_input_shape(name, _batch1_shape(artifact, name))
        self._stream = _cuda_check(cudart.cudaStreamCreate())
        for name in names:
            shape = tuple(context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            host = np.empty(shape, dtype)
            ptr = _cuda_check(cudart.cudaMalloc(max(host.nbytes, 1)))
            self._device_ptrs[name] = int(ptr)
            self._host[name] = host
            context.set_tensor_address(name, int(ptr))
        self._context, self._inputs, self._output = context, inputs, output

    # ------------------------------------------------------------------ run
    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        cudart = self._cudart
        assert cudart is not None and self._context is not None and self._output is not None
        if threading.get_ident() != self._device_thread:  # the current device is per thread in CUDA
            _cuda_check(cudart.cudaSetDevice(self.device))
            self._device_thread = threading.get_ident()
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self._inputs:
            host = self._host[name]
            np.copyto(host, feeds[name].reshape(host.shape), casting="same_kind")
            _cuda_check(
                cudart.cudaMemcpyAsync(self._device_ptrs[name], host.ctypes.data, host.nbytes, h2d, self._stream)
            )
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        out = self._host[self._output]
        _cuda_check(
            cudart.cudaMemcpyAsync(out.ctypes.data, self._device_ptrs[self._output], out.nbytes, d2h, self._stream)
        )
        _cuda_check(cudart.cudaStreamSynchronize(self._stream))
        return out.copy()

    def close(self) -> None:
        cudart = self._cudart
        if cudart is not None:
            for ptr in self._device_ptrs.values():
                cudart.cudaFree(ptr)
            if self._stream is not None:
                cudart.cudaStreamDestroy(self._stream)
        self._device_ptrs, self._host = {}, {}
        self._stream = self._context = self._engine = None


def _batch1_shape(artifact: PolicyArtifact, name: str) -> tuple[int, ...]:
    """The manifest's shape of input ``name`` with the dynamic batch (-1) fixed to 1."""
    for spec in artifact.manifest.inputs:
        if spec.name == name:
            return tuple(1 if d < 0 else int(d) for d in spec.shape)
    raise ModelMismatchError(f"engine input {name!r} is not declared in the manifest")


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
