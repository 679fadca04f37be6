"""Benchmark: OnnxRuntimeBackend latency for one action chunk from an MLP-sized flow policy.

Builds a random-weight ONNX graph shaped like the exported sampler -- observation embedding, then
10 unrolled Euler steps x <- x + dt * v(state, x, t) of a 3-layer MLP velocity field, with the
policy I/O contract's inputs state (B, state_dim) and noise (B, 30, 16) -- packs it as a verified
artifact (manifest + reference I/O) and times ``backend.infer`` (normalisation and output checks
included), as the InferenceWorker calls it. Writes p50/p99 to
bench/results/inference_latency.json. Needs the ``onnx`` package to build the graph.

    .venv/bin/python ros2_ws/src/lwd_fleet/bench/bench_inference.py [--iters 300] [--hidden 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lwd_fleet.inference import OnnxRuntimeBackend
from lwd_fleet.inference.artifact import PolicyObservation, open_artifact
from lwd_protocol.manifest import ActionSpec, Normalization, ObservationSpec, PolicyManifest, file_entry
from lwd_protocol.policy_io import input_specs, output_specs, save_reference_io
from lwd_protocol.robot_spec import ACTION_DIM, CHUNK_HORIZON, CONTROL_RATE_HZ
from lwd_protocol.store import MANIFEST_NAME, MODEL_NAME, REFERENCE_IO_NAME

RESULTS = Path(__file__).resolve().parent / "results" / "inference_latency.json"


def build_euler_mlp(path: Path, obs_dim: int, hidden: int, steps: int = 10, embed: int = 256, seed: int = 0) -> int:
    """Write the graph to ``path``; return its parameter count."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    flat = CHUNK_HORIZON * ACTION_DIM

    def dense(name: str, n_in: int, n_out: int) -> list[onnx.TensorProto]:
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        return [
            numpy_helper.from_array(w, f"{name}_w"),
            numpy_helper.from_array(np.zeros(n_out, np.float32), f"{name}_b"),
        ]

    inits = [
        *dense("emb", obs_dim, embed),
        *dense("l1", embed + flat + 1, hidden),
        *dense("l2", hidden, hidden),
        *dense("l3", hidden, flat),
    ]
    inits += [
        numpy_helper.from_array(np.array([-1, flat], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([-1, CHUNK_HORIZON, ACTION_DIM], np.int64), "chunk_shape"),
        numpy_helper.from_array(np.array(1.0 / steps, np.float32), "dt"),
    ]
    nodes = [
        helper.make_node("Reshape", ["noise", "flat_shape"], ["x0"]),
        helper.make_node("Gemm", ["state", "emb_w", "emb_b"], ["e0"]),
        helper.make_node("Shape", ["state"], ["batch"], start=0, end=1),
        helper.make_node("Concat", ["batch", "one"], ["t_shape"], axis=0),
        helper.make_node("Relu", ["e0"], ["e"]),
    ]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    for k in range(steps):
        inits.append(numpy_helper.from_array(np.full((1, 1), k / steps, np.float32), f"w{k}"))
        nodes += [
            helper.make_node("Expand", [f"w{k}", "t_shape"], [f"t{k}"]),
            helper.make_node("Concat", ["e", f"x{k}", f"t{k}"], [f"in{k}"], axis=1),
            helper.make_node("Gemm", [f"in{k}", "l1_w", "l1_b"], [f"a{k}"]),
            helper.make_node("Relu", [f"a{k}"], [f"h{k}"]),
            helper.make_node("Gemm", [f"h{k}", "l2_w", "l2_b"], [f"b{k}"]),
            helper.make_node("Relu", [f"b{k}"], [f"g{k}"]),
            helper.make_node("Gemm", [f"g{k}", "l3_w", "l3_b"], [f"v{k}"]),
            helper.make_node("Mul", [f"v{k}", "dt"], [f"d{k}"]),
            helper.make_node("Add", [f"x{k}", f"d{k}"], [f"x{k + 1}"]),
        ]
    nodes.append(helper.make_node("Reshape", [f"x{steps}", "chunk_shape"], ["actions"]))
    graph = helper.make_graph(
        nodes,
        "euler_mlp_policy",
        [
            helper.make_tensor_value_info("state", TensorProto.FLOAT, ["B", obs_dim]),
            helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["B", CHUNK_HORIZON, ACTION_DIM]),
        ],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["B", CHUNK_HORIZON, ACTION_DIM])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # onnxruntime 1.31 rejects the IR v14 that onnx 1.23 writes by default
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return int(sum(np.prod(t.dims) for t in inits if t.name.endswith(("_w", "_b"))))


def pack_artifact(folder: Path, obs_dim: int) -> None:
    """Manifest + reference I/O around ``folder/policy.onnx``, as the learner's exporter writes them."""
    import onnxruntime as ort

    observation = ObservationSpec(state_source="sim_state", state_dim=obs_dim)
    action = ActionSpec()
    rng = np.random.default_rng(7)
    ref_in = {
        "state": rng.standard_normal((1, obs_dim)).astype(np.float32),
        "noise": rng.standard_normal((1, CHUNK_HORIZON, ACTION_DIM)).astype(np.float32),
    }
    session = ort.InferenceSession(str(folder / MODEL_NAME), providers=["CPUExecutionProvider"])
    save_reference_io(folder / REFERENCE_IO_NAME, ref_in, {"actions": session.run(["actions"], ref_in)[0]})
    manifest = PolicyManifest(
        version=1,
        parent_version=0,
        created_at="1970-01-01T00:00:00Z",
        training_snapshot=0,
        model_file=MODEL_NAME,
        files={n: file_entry(folder / n) for n in (MODEL_NAME, REFERENCE_IO_NAME)},
        inputs=input_specs(observation, action),
        outputs=output_specs(action),
        observation=observation,
        action=action,
        normalization=Normalization([0.0] * obs_dim, [1.0] * obs_dim, [0.0] * action.dim, [1.0] * action.dim),
        reference_io_file=REFERENCE_IO_NAME,
        algorithm="benchmark: random weights",
    )
    (folder / MANIFEST_NAME).write_text(manifest.to_json())


def measure(folder: Path, obs_dim: int, threads: int, iters: int, warmup: int) -> dict[str, float]:
    backend = OnnxRuntimeBackend("cpu", intra_op_threads=threads)
    backend.load(open_artifact(folder))
    backend.warmup(warmup)
    rng = np.random.default_rng(1)
    times = []
    for _ in range(iters):
        obs = PolicyObservation(rng.standard_normal(obs_dim))
        noise = rng.standard_normal((CHUNK_HORIZON, ACTION_DIM), dtype=np.float32)
        t0 = time.perf_counter()
        backend.infer(obs, noise)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "max_ms": round(float(ms.max()), 3),
        "iterations": iters,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--obs-dim", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        params = build_euler_mlp(folder / MODEL_NAME, args.obs_dim, args.hidden, args.steps)
        pack_artifact(folder, args.obs_dim)
        results = {str(t): measure(folder, args.obs_dim, t, args.iters, args.warmup) for t in args.threads}
    report = {
        "backend": "onnxruntime-cpu",
        "what": "OnnxRuntimeBackend.infer: one (30, 16) chunk, normalisation and checks included, batch 1",
        "model": {
            "kind": "random-weight Euler MLP sampler",
            "obs_dim": args.obs_dim,
            "hidden": args.hidden,
            "euler_steps": args.steps,
            "parameters": params,
        },
        "by_intra_op_threads": results,
        "control_period_ms": round(1000 / CONTROL_RATE_HZ, 2),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "load_average_1m": round(os.getloadavg()[0], 2),
            "note": "shared CPU: other jobs may run concurrently; p99 is sensitive to that",
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["by_intra_op_threads"], indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
