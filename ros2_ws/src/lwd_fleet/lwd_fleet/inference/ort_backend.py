"""OnnxRuntimeBackend: CPU everywhere; CUDA when the onnxruntime-gpu build offers it.

onnxruntime-gpu silently falls back to CPU when CUDA libraries are missing, so after creating
the session we check the providers it *actually* uses: a backend that says "onnxruntime-cuda"
must really be running on the GPU (PolicyStatus reports it to the fleet). The session is built
from the verified model path, so ONNX external-data files listed in the manifest load too.
"""

from __future__ import annotations

import numpy as np

from lwd_fleet.inference.artifact import PolicyArtifact
from lwd_fleet.inference.backend import BackendUnavailableError, ModelMismatchError, PolicyBackend
from lwd_protocol.policy_io import ACTIONS_OUTPUT

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_ORT_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)", "float16": "tensor(float16)"}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


class OnnxRuntimeBackend(PolicyBackend):
    def __init__(self, device: str = "cpu", intra_op_threads: int | None = None) -> None:
        """device: "cpu" or "cuda". intra_op_threads: pin to the cores reserved for inference."""
        super().__init__()
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        self.device = device
        self.intra_op_threads = intra_op_threads
        self._session = None

    @property
    def name(self) -> str:
        return f"onnxruntime-{self.device}"

    def _load_model(self, artifact: PolicyArtifact) -> None:
        import onnxruntime as ort

        providers = [CPU]
        if self.device == "cuda":
            if CUDA not in ort.get_available_providers():
                raise BackendUnavailableError(f"onnxruntime {ort.__version__} has no {CUDA} (CPU-only build?)")
            providers = [CUDA, CPU]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.intra_op_threads:
            opts.intra_op_num_threads = int(self.intra_op_threads)
            opts.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(artifact.model_path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for unloadable graphs
            raise ModelMismatchError(f"onnxruntime cannot load {artifact.model_path.name}: {exc}") from exc
        if self.device == "cuda" and CUDA not in session.get_providers():
            raise BackendUnavailableError(f"{CUDA} is installed but inactive (CUDA/cuDNN libraries or GPU missing)")
        check_session_io(session, artifact)
        self._session = session

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        assert self._session is not None
        (out,) = self._session.run([ACTIONS_OUTPUT], feeds)
        return out

    def close(self) -> None:
        self._session = None


def check_session_io(session: object, artifact: PolicyArtifact) -> None:
    """The graph must be what the manifest declares: same input names, dtypes, ranks, static dims."""
    manifest = artifact.manifest
    model_inputs = {i.name: i for i in session.get_inputs()}  # type: ignore[attr-defined]
    names = [t.name for t in manifest.inputs]
    if set(model_inputs) != set(names):
        raise ModelMismatchError(f"manifest inputs {sorted(names)} != model inputs {sorted(model_inputs)}")
    for spec in manifest.inputs:
        got = model_inputs[spec.name]
        want_type = _ORT_TYPES.get(spec.dtype)
        if want_type is not None and got.type != want_type:
            raise ModelMismatchError(f"input {spec.name!r}: manifest dtype {spec.dtype}, model type {got.type}")
        if len(got.shape) != len(spec.shape):
            raise ModelMismatchError(f"input {spec.name!r}: manifest shape {spec.shape}, model shape {got.shape}")
        for m, d in zip(got.shape, spec.shape, strict=True):
            if isinstance(m, int) and d >= 0 and m != d:
                raise ModelMismatchError(f"input {spec.name!r}: manifest shape {spec.shape}, model shape {got.shape}")
    outputs = [o.name for o in session.get_outputs()]  # type: ignore[attr-defined]
    if ACTIONS_OUTPUT not in outputs:
        raise ModelMismatchError(f"model has no output {ACTIONS_OUTPUT!r}; outputs: {outputs}")
