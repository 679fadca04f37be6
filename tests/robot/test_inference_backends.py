"""Backends on real ONNX graphs built with the onnx helper API: ONNX Runtime vs closed-form / numpy results,
manifest normalisation, graph-vs-manifest checks, reference-I/O validation, engine selection, TensorRT skip."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from lwd_fleet.inference import (
    BackendUnavailableError,
    Environment,
    InferenceError,
    ModelMismatchError,
    OnnxRuntimeBackend,
    PolicyArtifact,
    PolicyObservation,
    ReferenceMismatchError,
    TensorRTBackend,
    engine_cache_key,
    load_backend,
    open_artifact,
    probe_environment,
    select_backend,
)
from lwd_protocol.manifest import ObservationSpec, PolicyManifest, file_entry
from lwd_protocol.policy_io import PolicyInputError
from lwd_protocol.store import MANIFEST_NAME, MODEL_NAME, REFERENCE_IO_NAME

pytest.importorskip("onnx", reason="the `onnx` package builds the test models")
from lwd_fleet.inference.synthetic import drift_policy, target_policy

H, A = 30, 16
RNG = np.random.default_rng(7)
DELTA = np.linspace(-0.01, 0.02, A)
STATE_MEAN, STATE_STD = RNG.standard_normal(A), np.abs(RNG.standard_normal(A)) + 0.5
ACT_MEAN, ACT_STD = RNG.standard_normal(A) * 0.1, np.abs(RNG.standard_normal(A)) * 0.3 + 0.05


@pytest.fixture(scope="module")
def drift_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    policy = drift_policy(
        3, DELTA, state_mean=STATE_MEAN, state_std=STATE_STD, action_mean=ACT_MEAN, action_std=ACT_STD
    )
    return policy.write(tmp_path_factory.mktemp("policies") / "v000003")


@pytest.fixture(scope="module")
def cpu_backend(drift_dir: Path) -> OnnxRuntimeBackend:
    backend = OnnxRuntimeBackend("cpu", intra_op_threads=1)
    backend.load(open_artifact(drift_dir))
    return backend


def rehash(folder: Path) -> None:
    """Re-record sha256/size of every file (simulates a consistently built but wrong artifact)."""
    manifest = PolicyManifest.from_json((folder / MANIFEST_NAME).read_text())
    manifest.files = {name: file_entry(folder / name) for name in manifest.files}
    (folder / MANIFEST_NAME).write_text(manifest.to_json())


def test_ort_cpu_applies_the_manifest_normalisation_exactly(cpu_backend: OnnxRuntimeBackend) -> None:
    """drift policy: de-normalised row h == state + (h+1) * delta for ANY statistics, so the result
    is only right if the backend normalises the state and de-normalises the actions as the manifest says."""
    assert cpu_backend.name == "onnxruntime-cpu" and cpu_backend.manifest.version == 3
    for _ in range(3):
        state = RNG.standard_normal(A)
        noise = RNG.standard_normal((H, A)).astype(np.float32)
        chunk = cpu_backend.infer(PolicyObservation(state), noise)
        assert chunk.shape == (H, A) and chunk.dtype == np.float32
        np.testing.assert_allclose(chunk, state + np.arange(1, H + 1)[:, None] * DELTA, atol=2e-5)


def test_flow_graph_with_images_and_task_matches_numpy(tmp_path: Path) -> None:
    obs = ObservationSpec(
        state_source="sim_state",
        state_dim=24,
        cameras=["head", "right_wrist"],
        image_size=[8, 6],
        tasks=["restocking", "gongfu_tea"],
    )
    w_task = RNG.standard_normal((2, H * A)).astype(np.float32)
    policy = target_policy(
        5,
        0.3,
        observation=obs,
        action_mean=0.1,
        action_std=0.2,
        hidden=32,
        noise_scale=0.5,
        w_task=w_task,
        w_image=np.full(H * A, 0.7),
    )
    folder = policy.write(tmp_path / "v000005")
    backend = OnnxRuntimeBackend()
    backend.load(open_artifact(folder))
    assert backend.validate_reference() <= 1e-4
    state = RNG.standard_normal(24)
    images = {
        "head": RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8),
        "right_wrist": RNG.integers(0, 256, (8, 6, 3), dtype=np.uint8),
    }
    noise = RNG.standard_normal((H, A)).astype(np.float32)
    got = backend.infer(PolicyObservation(state, "gongfu_tea", images), noise)
    # independent numpy: normalise (stats 0/1 here), run the reference forward, de-normalise
    inputs = {
        "state": state[None].astype(np.float32),
        "task": np.array([[0.0, 1.0]], np.float32),
        "images": np.stack([images["head"], images["right_wrist"]])[None],
        "noise": noise[None],
    }
    want = policy.forward(inputs)[0] * 0.2 + 0.1
    np.testing.assert_allclose(got, want, atol=1e-4)
    image_term = np.mean(np.stack(list(images.values()))) / 255.0 * 0.7 * 0.2
    assert abs(image_term) > 1e-3  # the images really change the result


def test_graph_that_does_not_match_its_manifest_is_refused(tmp_path: Path) -> None:
    folder = drift_policy(4, DELTA).write(tmp_path / "v000004")
    other = target_policy(4, 0.0, observation=ObservationSpec(state_dim=8)).write(tmp_path / "other")
    (folder / MODEL_NAME).write_bytes((other / MODEL_NAME).read_bytes())
    rehash(folder)
    with pytest.raises(ModelMismatchError, match="input 'state': manifest shape"):
        OnnxRuntimeBackend().load(open_artifact(folder))


def test_reference_io_mismatch_is_refused(tmp_path: Path) -> None:
    folder = drift_policy(6, DELTA).write(tmp_path / "v000006")
    with np.load(folder / REFERENCE_IO_NAME) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["out/actions"] = arrays["out/actions"] + 0.01
    with open(folder / REFERENCE_IO_NAME, "wb") as fh:
        np.savez(fh, **arrays)
    rehash(folder)
    backend = OnnxRuntimeBackend()
    backend.load(open_artifact(folder))
    with pytest.raises(ReferenceMismatchError, match=r"differs by 0\.01"):
        backend.validate_reference()


def test_bad_requests_raise_clear_errors(cpu_backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    noise = np.zeros((H, A), np.float32)
    with pytest.raises(PolicyInputError, match="state has 15 values"):
        cpu_backend.infer(PolicyObservation(np.zeros(A - 1)), noise)
    with pytest.raises(PolicyInputError, match="NaN"):
        cpu_backend.infer(PolicyObservation(np.full(A, np.nan)), noise)
    with pytest.raises(PolicyInputError, match="noise has"):
        cpu_backend.infer(PolicyObservation(np.zeros(A)), np.zeros((H, A - 1)))
    with pytest.raises(RuntimeError, match="no policy loaded"):
        OnnxRuntimeBackend().infer(PolicyObservation(np.zeros(A)), noise)
    with pytest.raises(TypeError, match="open_artifact"):
        OnnxRuntimeBackend().load(tmp_path)  # a bare folder is never loaded
    with pytest.raises(TypeError, match="only by open_artifact"):
        PolicyArtifact(tmp_path, cpu_backend.manifest, object())


def test_non_finite_policy_output_is_an_inference_error(tmp_path: Path) -> None:
    folder = drift_policy(7, DELTA, noise_scale=1.0).write(tmp_path / "v000007")
    backend = OnnxRuntimeBackend()
    backend.load(open_artifact(folder))
    with pytest.raises(InferenceError, match="non-finite"):
        backend.infer(PolicyObservation(np.zeros(A)), np.full((H, A), np.inf, np.float32))


# ----------------------------------------------------------------------------- selection
CPU_ONLY = Environment(
    None, "tensorrt not importable: ModuleNotFoundError", None, "no GPU found", ("CPUExecutionProvider",)
)
GPU_ALL = Environment("10.9.0", "", "NVIDIA H100", "", ("CUDAExecutionProvider", "CPUExecutionProvider"))
GPU_ORT_ONLY = Environment(
    None,
    "tensorrt not importable: ModuleNotFoundError",
    "NVIDIA H100",
    "",
    ("CUDAExecutionProvider", "CPUExecutionProvider"),
)


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
        (
            Environment(None, "x", None, "no GPU found", ("CUDAExecutionProvider", "CPUExecutionProvider")),
            "onnxruntime-cpu",
            ["no GPU found"],
        ),
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


def test_load_backend_auto_falls_back_when_an_engine_cannot_load(drift_dir: Path, tmp_path: Path) -> None:
    """An environment that claims TensorRT + CUDA (neither usable here) ends on ORT-CPU and says why."""
    if probe_environment().tensorrt_ok:
        pytest.skip("tensorrt is importable here: the fallback path is not exercised")
    claims_gpu = Environment("10.9.0", "", "Fake GPU", "", ("CPUExecutionProvider",))
    backend, reason = load_backend("auto", open_artifact(drift_dir), env=claims_gpu, trt_cache_dir=tmp_path)
    assert backend.name == "onnxruntime-cpu" and backend.loaded
    assert "tensorrt failed to load" in reason and "tensorrt not importable" in reason


def test_engine_cache_key_changes_with_every_component() -> None:
    digest = hashlib.sha256(b"model").hexdigest()
    base = engine_cache_key(digest, "NVIDIA H100 80GB HBM3", "10.9.0.34", "fp16")
    assert base.startswith(digest) and "/" not in base and " " not in base
    others = {
        engine_cache_key(hashlib.sha256(b"model2").hexdigest(), "NVIDIA H100 80GB HBM3", "10.9.0.34", "fp16"),
        engine_cache_key(digest, "NVIDIA H200", "10.9.0.34", "fp16"),
        engine_cache_key(digest, "NVIDIA H100 80GB HBM3", "10.10.0", "fp16"),
        engine_cache_key(digest, "NVIDIA H100 80GB HBM3", "10.9.0.34", "fp32"),
    }
    assert base not in others and len(others) == 4
    with pytest.raises(ValueError, match="hex content hash"):
        engine_cache_key("not-a-hash", "gpu", "10", "fp32")


def test_tensorrt_backend_without_tensorrt_says_why(drift_dir: Path, tmp_path: Path) -> None:
    if probe_environment().tensorrt_ok:
        pytest.skip("tensorrt is importable here")
    with pytest.raises(BackendUnavailableError, match="tensorrt not importable"):
        TensorRTBackend(tmp_path).load(open_artifact(drift_dir))


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
def test_tensorrt_backend_matches_and_caches_engine(drift_dir: Path, tmp_path: Path) -> None:
    _gpu_env_or_skip(need_trt=True)
    artifact = open_artifact(drift_dir)
    first = TensorRTBackend(tmp_path / "engines")
    first.load(artifact)
    assert first.built_engine and first.engine_path is not None and first.engine_path.is_file()
    assert first.engine_path.name.startswith(artifact.content_hash)
    state, noise = RNG.standard_normal(A), RNG.standard_normal((H, A)).astype(np.float32)
    want = state + np.arange(1, H + 1)[:, None] * DELTA
    np.testing.assert_allclose(first.infer(PolicyObservation(state), noise), want, atol=1e-3)
    assert first.validate_reference() <= artifact.manifest.reference_atol
    second = TensorRTBackend(tmp_path / "engines")
    second.load(artifact)
    assert not second.built_engine and second.engine_path == first.engine_path
    np.testing.assert_allclose(second.infer(PolicyObservation(state), noise), want, atol=1e-3)
    first.close()
    second.close()


@pytest.mark.gpu
def test_ort_cuda_backend_matches(drift_dir: Path) -> None:
    _gpu_env_or_skip(need_trt=False)
    backend = OnnxRuntimeBackend("cuda")
    backend.load(open_artifact(drift_dir))
    state, noise = RNG.standard_normal(A), RNG.standard_normal((H, A)).astype(np.float32)
    np.testing.assert_allclose(
        backend.infer(PolicyObservation(state), noise), state + np.arange(1, H + 1)[:, None] * DELTA, atol=1e-4
    )
