"""OnnxRuntimeBackend: CPU everywhere; CUDA when the onnxruntime-gpu build offers it.

onnxruntime-gpu silently falls back to CPU when CUDA libraries are missing, so after creating
the session we check the providers it *actually* uses: a backend that says "onnxruntime-cuda"
must really be running on the GPU (PolicyStatus reports it to the fleet).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lwd_fleet.inference.backend import BackendUnavailableError, PolicyBackend
from lwd_fleet.inference.spec import ModelSpec, SpecError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


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
        self._output: str | None = None

    @property
    def name(self) -> str:
        return f"onnxruntime-{self.device}"

    def _load_model(self, path: Path, spec: ModelSpec) -> None:
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
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        if self.device == "cuda" and CUDA not in session.get_providers():
            raise BackendUnavailableError(f"{CUDA} is installed but inactive (CUDA/cuDNN libraries or GPU missing)")
        _check_io(session, spec)
        outputs = [o.name for o in session.get_outputs()]
        output = spec.output or outputs[0]
        if output not in outputs:
            raise SpecError(f"model has no output {output!r}; outputs: {outputs}")
        self._session, self._output = session, output

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        assert self._session is not None
        (out,) = self._session.run([self._output], feeds)
        return out

    def close(self) -> None:
        self._session = None


def _check_io(session: object, spec: ModelSpec) -> None:
    """The manifest must describe the graph: same input names, compatible static dims."""
    model_inputs = {i.name: i for i in session.get_inputs()}  # type: ignore[attr-defined]
    names = {i.name for i in spec.inputs}
    if set(model_inputs) != names:
        raise SpecError(f"manifest inputs {sorted(names)} != model inputs {sorted(model_inputs)}")
    for inp in spec.inputs:
        model_shape = model_inputs[inp.name].shape
        if len(model_shape) != len(inp.shape):
            raise SpecError(f"input {inp.name!r}: manifest rank {len(inp.shape)}, model shape {model_shape}")
        for m, d in zip(model_shape, inp.shape, strict=True):
            if isinstance(m, int) and d is not None and m != d:
                raise SpecError(f"input {inp.name!r}: manifest shape {inp.shape}, model shape {model_shape}")
