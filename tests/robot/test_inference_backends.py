"""OnnxRuntimeBackend vs numpy on a tiny ONNX graph; manifest checks; backend selection; TensorRT skip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lwd_fleet.inference import (
    BackendUnavailableError,
    Environment,
    InferenceError,
    OnnxRuntimeBackend,
    SpecError,
    TensorRTBackend,
    engine_cache_key,
    load_backend,
    probe_environment,
    select_backend,
)

onnx = pytest.importorskip("onnx", reason="the `onnx` package builds the test models")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

H, A, D = 30, 16, 8
RNG = np.random.default_rng(7)
W = (RNG.standard_normal((D, H * A)) * 0.5).astype(np.float32)
MEAN = RNG.standard_normal(D)
STD = np.abs(RNG.standard_normal(D)) + 0.5


def build_model(path: Path, batch: int | str = 1) -> Path:
    """actions = reshape(tanh(obs @ W), (B, H, A)) + noise."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["obs", "W"], ["z"]),
            helper.make_node("Tanh", ["z"], ["t"]),
            helper.make_node("Reshape", ["t", "shape"], ["r"]),
            helper.make_node("Add", ["r", "noise"], ["actions"]),
        ],
        "tiny_policy",
        [
            helper.make_tensor_value_info("obs", TensorProto.FLOAT, [batch, D]),
            helper.make_tensor_value_info("noise", TensorProto.FLOAT, [batch, H, A]),
        ],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [batch, H, A])],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.array([-1, H, A], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # onnx 1.23 writes IR v14, which onnxruntime 1.31 rejects
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def manifest(**extra: object) -> dict:
    m = {
        "inputs": {"obs": {"shape": [1, D]}, "noise": {"shape": [1, H, A]}},
        "noise_input": "noise",
        "output": "actions",
        "normalization": {"obs": {"mean": MEAN.tolist(), "std": STD.tolist()}},
    }
    m.update(extra)
    return m


def reference(obs: np.ndarray, noise: np.ndarray, mean: np.ndarray = MEAN, std: np.ndarray = STD) -> np.ndarray:
    x = ((obs - mean) / std).astype(np.float32)
    return np.tanh(x @ W).reshape(H, A) + noise


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("onnx") / "policy.onnx")


@pytest.fixture(scope="module")
def cpu_backend(model_path: Path) -> OnnxRuntimeBackend:
    backend = OnnxRuntimeBackend("cpu", intra_op_threads=1)
    backend.load(model_path, manifest())
    return backend


def test_ort_cpu_matches_numpy_with_normalisation(cpu_backend: OnnxRuntimeBackend) -> None:
    assert cpu_backend.name == "onnxruntime-cpu"
    for _ in range(3):
        obs = RNG.standard_normal(D) * 3 + 1
        noise = RNG.standard_normal((H, A)).astype(np.float32)
        chunk = cpu_backend.infer({"obs": obs}, noise)
        assert chunk.shape == (H, A) and chunk.dtype == np.float32
        np.testing.assert_allclose(chunk, reference(obs, noise), atol=2e-5)
        # the stats are really applied: unnormalised input gives a different answer
        assert not np.allclose(chunk, np.tanh(obs.astype(np.float32) @ W).reshape(H, A) + noise, atol=1e-3)


def test_stats_come_from_the_manifest_and_actions_are_denormalised(model_path: Path) -> None:
    mean2, std2 = np.zeros(D), np.full(D, 2.0)
    act_mean, act_std = np.linspace(-1, 1, A), np.full(A, 0.5)
    backend = OnnxRuntimeBackend()
    backend.load(model_path, manifest(normalization={"obs": {"mean": mean2.tolist(), "std": std2.tolist()}},
                                      action_normalization={"mean": act_mean.tolist(), "std": act_std.tolist()}))
    obs, noise = RNG.standard_normal(D), np.zeros((H, A), np.float32)
    expected = reference(obs, noise, mean2, std2) * act_std + act_mean
    np.testing.assert_allclose(backend.infer({"obs": obs}, noise), expected, atol=2e-5)


def test_dynamic_batch_model(tmp_path: Path) -> None:
    path = build_model(tmp_path / "dyn.onnx", batch="batch")
    backend = OnnxRuntimeBackend()
    backend.load(path, manifest(inputs={"obs": {"shape": [None, D]}, "noise": {"shape": ["batch", H, A]}}))
    obs, noise = RNG.standard_normal(D), RNG.standard_normal((H, A)).astype(np.float32)
    np.testing.assert_allclose(backend.infer({"obs": obs}, noise), reference(obs, noise), atol=2e-5)
    assert len(backend.warmup(2)) == 2


@pytest.mark.parametrize(
    ("bad_manifest", "match"),
    [
        (manifest(normalization={}), "no normalisation stats"),
        (manifest(inputs={"obs": {"shape": [1, D + 1]}, "noise": {"shape": [1, H, A]}}), "model shape"),
        (manifest(inputs={"state": {"shape": [1, D]}, "noise": {"shape": [1, H, A]}},
                  normalization={"state": {"mean": 0, "std": 1}}), "model inputs"),
        (manifest(output="nope"), "no output"),
        (manifest(normalization={"obs": {"mean": [0.0], "std": [-1.0]}}), "std >= 0"),
        (manifest(noise_input="eps"), "noise input"),
    ],
)
def test_manifest_mismatch_is_rejected(model_path: Path, bad_manifest: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        OnnxRuntimeBackend().load(model_path, bad_manifest)


def test_bad_requests_raise_clear_errors(cpu_backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    noise = np.zeros((H, A), np.float32)
    with pytest.raises(SpecError, match="observation keys"):
        cpu_backend.infer({"state": np.zeros(D)}, noise)
    with pytest.raises(SpecError, match="expected"):
        cpu_backend.infer({"obs": np.zeros(D + 1)}, noise)
    with pytest.raises(SpecError, match="noise"):
        cpu_backend.infer({"obs": np.zeros(D)}, np.zeros((H, A - 1)))
    with pytest.raises(InferenceError, match="non-finite"):
        cpu_backend.infer({"obs": np.zeros(D)}, np.full((H, A), np.inf, np.float32))
    with pytest.raises(FileNotFoundError):
        OnnxRuntimeBackend().load(tmp_path / "missing.onnx", manifest())
    with pytest.raises(RuntimeError, match="no model loaded"):
        OnnxRuntimeBackend().infer({"obs": np.zeros(D)}, noise)


# ----------------------------------------------------------------------------- selection
CPU_ONLY = Environment(None, "tensorrt not importable: ModuleNotFoundError", None, "no GPU found",
                       ("CPUExecutionProvider",))
GPU_ALL = Environment("10.9.0", "", "NVIDIA H100", "", ("CUDAExecutionProvider", "CPUExecutionProvider"))
GPU_ORT_ONLY = Environment(None, "tensorrt not importable: ModuleNotFoundError", "NVIDIA H100", "",
                           ("CUDAExecutionProvider", "CPUExecutionProvider"))


def test_select_backend_on_this_machine() -> None:
    env = probe_environment()
    backend, reason = select_backend("auto", env=env)
    if env.tensorrt_ok and env.gpu_name:
        assert backend.name == "tensorrt"
    elif env.ort_cuda_ok and env.gpu_name:
        assert backend.name == "onnxruntime-cuda"
    else:  # this CI machine: CPU only
        assert backend.name == "onnxruntime-cpu"
        assert "auto" in reason and "TensorRT skipped" in reason and "CUDA provider skipped" in reason
    assert select_backend("onnxruntime-cpu")[0].name == "onnxruntime-cpu"


@pytest.mark.parametrize(
    ("env", "name", "words"),
    [
        (GPU_ALL, "tensorrt", ["tensorrt 10.9.0", "NVIDIA H100", "GPU is present"]),
        (GPU_ORT_ONLY, "onnxruntime-cuda", ["onnxruntime-cuda on NVIDIA H100", "tensorrt not importable"]),
        (CPU_ONLY, "onnxruntime-cpu", ["tensorrt not importable", "CUDAExecutionProvider"]),
        (Environment(None, "x", None, "no GPU found", ("CUDAExecutionProvider", "CPUExecutionProvider")),
         "onnxruntime-cpu", ["no GPU found"]),
    ],
)
def test_select_backend_auto_reasons(env: Environment, name: str, words: list[str]) -> None:
    backend, reason = select_backend("auto", env=env)
    assert backend.name == name
    for w in words:
        assert w in reason


def test_explicit_preferences_never_fall_back_silently() -> None:
    with pytest.raises(BackendUnavailableError, match="tensorrt requested but unavailable: tensorrt not importable"):
        select_backend("tensorrt", env=CPU_ONLY)
    with pytest.raises(BackendUnavailableError, match="lack CUDAExecutionProvider"):
        select_backend("onnxruntime-cuda", env=CPU_ONLY)
    assert select_backend("tensorrt", env=GPU_ALL)[0].name == "tensorrt"
    with pytest.raises(ValueError):
        select_backend("fastest")


def test_load_backend_auto_falls_back_when_engine_cannot_load(model_path: Path, tmp_path: Path) -> None:
    """An environment that claims TensorRT (but tensorrt isn't importable here) falls back to CPU."""
    if probe_environment().tensorrt_ok:
        pytest.skip("tensorrt is importable here: the fallback path is not exercised")
    claims_trt = Environment("10.9.0", "", "Fake GPU", "", ("CPUExecutionProvider",))
    backend, reason = load_backend("auto", model_path, manifest(), env=claims_trt, trt_cache_dir=tmp_path)
    assert backend.name == "onnxruntime-cpu" and backend.loaded
    assert "tensorrt failed to load" in reason


def test_engine_cache_key_changes_with_every_component() -> None:
    base = engine_cache_key(b"model", "NVIDIA H100 80GB HBM3", "10.9.0.34", "fp16")
    assert base.startswith(__import__("hashlib").sha256(b"model").hexdigest())
    assert "/" not in base and " " not in base
    others = {
        engine_cache_key(b"model2", "NVIDIA H100 80GB HBM3", "10.9.0.34", "fp16"),
        engine_cache_key(b"model", "NVIDIA H200", "10.9.0.34", "fp16"),
        engine_cache_key(b"model", "NVIDIA H100 80GB HBM3", "10.10.0", "fp16"),
        engine_cache_key(b"model", "NVIDIA H100 80GB HBM3", "10.9.0.34", "fp32"),
    }
    assert base not in others and len(others) == 4


# ----------------------------------------------------------------------------- GPU-only
def _gpu_env_or_skip(need_trt: bool) -> Environment:
    env = probe_environment()
    if need_trt and not env.tensorrt_ok:
        pytest.skip(f"TensorRT unavailable: {env.tensorrt_error}")
    if env.gpu_name is None:
        pytest.skip(f"no GPU: {env.gpu_error}")
    if not need_trt and not env.ort_cuda_ok:
        pytest.skip("onnxruntime has no CUDAExecutionProvider (CPU build)")
    return env


@pytest.mark.gpu
def test_tensorrt_backend_matches_numpy_and_caches_engine(model_path: Path, tmp_path: Path) -> None:
    _gpu_env_or_skip(need_trt=True)
    first = TensorRTBackend(tmp_path / "engines")
    first.load(model_path, manifest())
    assert first.built_engine and first.engine_path is not None and first.engine_path.is_file()
    obs, noise = RNG.standard_normal(D), RNG.standard_normal((H, A)).astype(np.float32)
    np.testing.assert_allclose(first.infer({"obs": obs}, noise), reference(obs, noise), atol=1e-3)
    second = TensorRTBackend(tmp_path / "engines")
    second.load(model_path, manifest())
    assert not second.built_engine and second.engine_path == first.engine_path
    np.testing.assert_allclose(second.infer({"obs": obs}, noise), reference(obs, noise), atol=1e-3)
    first.close()
    second.close()


@pytest.mark.gpu
def test_ort_cuda_backend_matches_numpy(model_path: Path) -> None:
    _gpu_env_or_skip(need_trt=False)
    backend = OnnxRuntimeBackend("cuda")
    backend.load(model_path, manifest())
    obs, noise = RNG.standard_normal(D), RNG.standard_normal((H, A)).astype(np.float32)
    np.testing.assert_allclose(backend.infer({"obs": obs}, noise), reference(obs, noise), atol=1e-4)


def test_tensorrt_backend_without_tensorrt_says_why(model_path: Path, tmp_path: Path) -> None:
    if probe_environment().tensorrt_ok:
        pytest.skip("tensorrt is importable here")
    with pytest.raises(BackendUnavailableError, match="tensorrt not importable"):
        TensorRTBackend(tmp_path).load(model_path, manifest())
