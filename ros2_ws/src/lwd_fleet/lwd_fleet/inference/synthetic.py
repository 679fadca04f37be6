"""Synthetic policy artifacts: real ONNX graphs + manifests that follow the policy I/O contract.

For tests, benchmarks and bring-up of a robot before a learner has published anything. The graph
is built with the ``onnx`` helper API (a test/bench dependency, imported lazily) and computes, in
normalised units (``policy_io``: state normalised in, actions de-normalised out)::

    base    = state @ W_state + bias  [+ task @ W_task]  [+ mean(images) / 255 * w_image]
    x_0     = noise;  x_{k+1} = x_k + dt * relu(x_k @ W1x + state @ W1s + b1_k) @ W2   (k < flow_steps)
    actions = reshape(base + noise_scale * x_K, (B, H, A))

With ``hidden = 0`` the flow is skipped (x_K = noise). :meth:`SyntheticPolicy.forward` is the
same computation in numpy: it writes the artifact's reference I/O and lets tests check engines
against an independent implementation. ``drift_policy`` and ``target_policy`` give policies whose
de-normalised output is known in closed form (controller tests assert on it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lwd_protocol.manifest import (
    ActionSpec,
    Normalization,
    ObservationSpec,
    PolicyManifest,
    file_entry,
)
from lwd_protocol.policy_io import (
    ACTIONS_OUTPUT,
    IMAGES_INPUT,
    NOISE_INPUT,
    STATE_INPUT,
    TASK_INPUT,
    input_specs,
    output_specs,
    save_reference_io,
)
from lwd_protocol.store import MANIFEST_NAME, MODEL_NAME, REFERENCE_IO_NAME

ONNX_OPSET = 17
ONNX_IR_VERSION = 10  # onnx 1.23 writes IR v14, which onnxruntime 1.31 rejects


@dataclass
class SyntheticPolicy:
    """Weights of the graph in the module docstring; shapes follow ``observation`` / ``action``."""

    version: int
    observation: ObservationSpec
    action: ActionSpec
    normalization: Normalization
    w_state: np.ndarray  # (S, H*A)
    bias: np.ndarray  # (H, A)
    noise_scale: float = 0.0
    w_task: np.ndarray | None = None  # (T, H*A), multi-task policies
    w_image: np.ndarray | None = None  # (H*A,), policies with cameras
    flow_steps: int = 10
    hidden: int = 0
    seed: int = 0
    notes: str = "synthetic policy (lwd_fleet.inference.synthetic)"
    _flow: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        s, ha = self.observation.state_dim, self.action.horizon * self.action.dim
        self.w_state = np.asarray(self.w_state, np.float32).reshape(s, ha)
        self.bias = np.asarray(self.bias, np.float32).reshape(self.action.horizon, self.action.dim)
        if self.observation.tasks:
            t = len(self.observation.tasks)
            self.w_task = np.zeros((t, ha), np.float32) if self.w_task is None else np.asarray(self.w_task, np.float32)
            if self.w_task.shape != (t, ha):
                raise ValueError(f"w_task must be ({t}, {ha}), got {self.w_task.shape}")
        if self.observation.cameras:
            self.w_image = np.zeros(ha, np.float32) if self.w_image is None else np.asarray(self.w_image, np.float32)
            if self.w_image.shape != (ha,):
                raise ValueError(f"w_image must be ({ha},), got {self.w_image.shape}")
        if self.hidden > 0 and not self._flow:
            rng = np.random.default_rng(self.seed)
            hid = self.hidden
            self._flow = {
                "W1x": (rng.standard_normal((ha, hid)) / np.sqrt(ha)).astype(np.float32),
                "W1s": (rng.standard_normal((s, hid)) / np.sqrt(s)).astype(np.float32),
                "W2": (rng.standard_normal((hid, ha)) * 0.1 / np.sqrt(hid)).astype(np.float32),
                "b1": np.stack(
                    [
                        (rng.standard_normal(hid) * 0.1 + k / self.flow_steps).astype(np.float32)
                        for k in range(self.flow_steps)
                    ]
                ),
            }

    # ------------------------------------------------------------------ numpy
    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Reference computation on model inputs (already normalised): (B, H, A) float32."""
        h, a = self.action.horizon, self.action.dim
        state = np.asarray(inputs[STATE_INPUT], np.float32)
        noise = np.asarray(inputs[NOISE_INPUT], np.float32).reshape(len(state), h * a)
        base = state @ self.w_state + self.bias.reshape(1, -1)
        if self.w_task is not None:
            base = base + np.asarray(inputs[TASK_INPUT], np.float32) @ self.w_task
        if self.w_image is not None:
            imgs = np.asarray(inputs[IMAGES_INPUT]).astype(np.float32)
            mean = imgs.reshape(len(imgs), -1).mean(axis=1, keepdims=True) / np.float32(255.0)
            base = base + mean * self.w_image[None]
        x = noise
        if self.hidden > 0:
            f, dt_ = self._flow, np.float32(1.0 / self.flow_steps)
            for k in range(self.flow_steps):
                hid = np.maximum(x @ f["W1x"] + state @ f["W1s"] + f["b1"][k], 0.0)
                x = x + dt_ * (hid @ f["W2"])
        return (base + np.float32(self.noise_scale) * x).reshape(-1, h, a).astype(np.float32)

    # ------------------------------------------------------------------- onnx
    def onnx_model(self):  # -> onnx.ModelProto
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        h, a = self.action.horizon, self.action.dim
        ha = h * a
        specs = input_specs(self.observation, self.action)
        types = {"float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8}
        graph_inputs = [
            helper.make_tensor_value_info(t.name, types[t.dtype], ["batch" if d < 0 else d for d in t.shape])
            for t in specs
        ]
        inits = [
            numpy_helper.from_array(self.w_state, "W_state"),
            numpy_helper.from_array(self.bias.reshape(-1), "bias"),
            numpy_helper.from_array(np.array([-1, ha], np.int64), "flat_shape"),
            numpy_helper.from_array(np.array([-1, h, a], np.int64), "chunk_shape"),
            numpy_helper.from_array(np.array(self.noise_scale, np.float32), "noise_scale"),
        ]
        nodes = [
            helper.make_node("Reshape", [NOISE_INPUT, "flat_shape"], ["x0"]),
            helper.make_node("MatMul", [STATE_INPUT, "W_state"], ["s_w"]),
            helper.make_node("Add", ["s_w", "bias"], ["base0"]),
        ]
        base = "base0"
        if self.w_task is not None:
            inits.append(numpy_helper.from_array(self.w_task, "W_task"))
            nodes += [
                helper.make_node("MatMul", [TASK_INPUT, "W_task"], ["t_w"]),
                helper.make_node("Add", [base, "t_w"], ["base1"]),
            ]
            base = "base1"
        if self.w_image is not None:
            inits += [
                numpy_helper.from_array(self.w_image.reshape(1, ha), "W_image"),
                numpy_helper.from_array(np.array(1.0 / 255.0, np.float32), "inv255"),
            ]
            nodes += [
                helper.make_node("Cast", [IMAGES_INPUT], ["img_f"], to=TensorProto.FLOAT),
                helper.make_node("ReduceMean", ["img_f"], ["img_m"], axes=[1, 2, 3, 4], keepdims=1),
                helper.make_node("Reshape", ["img_m", "col_shape"], ["img_col"]),
                helper.make_node("Mul", ["img_col", "inv255"], ["img_s"]),
                helper.make_node("MatMul", ["img_s", "W_image"], ["i_w"]),
                helper.make_node("Add", [base, "i_w"], ["base2"]),
            ]
            inits.append(numpy_helper.from_array(np.array([-1, 1], np.int64), "col_shape"))
            base = "base2"
        x = "x0"
        if self.hidden > 0:
            f = self._flow
            inits += [
                numpy_helper.from_array(f["W1x"], "W1x"),
                numpy_helper.from_array(f["W1s"], "W1s"),
                numpy_helper.from_array(f["W2"], "W2"),
                numpy_helper.from_array(np.array(1.0 / self.flow_steps, np.float32), "dt"),
            ]
            nodes.append(helper.make_node("MatMul", [STATE_INPUT, "W1s"], ["s_h"]))
            for k in range(self.flow_steps):
                inits.append(numpy_helper.from_array(f["b1"][k], f"b1_{k}"))
                nodes += [
                    helper.make_node("MatMul", [x, "W1x"], [f"xh{k}"]),
                    helper.make_node("Add", [f"xh{k}", "s_h"], [f"pre{k}"]),
                    helper.make_node("Add", [f"pre{k}", f"b1_{k}"], [f"preb{k}"]),
                    helper.make_node("Relu", [f"preb{k}"], [f"hid{k}"]),
                    helper.make_node("MatMul", [f"hid{k}", "W2"], [f"v{k}"]),
                    helper.make_node("Mul", [f"v{k}", "dt"], [f"dx{k}"]),
                    helper.make_node("Add", [x, f"dx{k}"], [f"x{k + 1}"]),
                ]
                x = f"x{k + 1}"
        nodes += [
            helper.make_node("Mul", [x, "noise_scale"], ["xs"]),
            helper.make_node("Add", [base, "xs"], ["flat_out"]),
            helper.make_node("Reshape", ["flat_out", "chunk_shape"], [ACTIONS_OUTPUT]),
        ]
        out = output_specs(self.action)[0]
        graph = helper.make_graph(
            nodes,
            f"synthetic_policy_v{self.version}",
            graph_inputs,
            [helper.make_tensor_value_info(ACTIONS_OUTPUT, TensorProto.FLOAT, ["batch", *out.shape[1:]])],
            initializer=inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
        model.ir_version = ONNX_IR_VERSION
        onnx.checker.check_model(model)
        return model

    def reference_inputs(self, batch: int = 2) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed + 1)
        obs, act = self.observation, self.action
        inputs = {STATE_INPUT: rng.standard_normal((batch, obs.state_dim)).astype(np.float32)}
        if obs.tasks:
            onehot = np.zeros((batch, len(obs.tasks)), np.float32)
            onehot[np.arange(batch), rng.integers(len(obs.tasks), size=batch)] = 1.0
            inputs[TASK_INPUT] = onehot
        if obs.cameras:
            hh, ww = obs.image_size
            inputs[IMAGES_INPUT] = rng.integers(0, 256, (batch, len(obs.cameras), hh, ww, 3), dtype=np.uint8)
        inputs[NOISE_INPUT] = rng.standard_normal((batch, act.horizon, act.dim)).astype(np.float32)
        return inputs

    def manifest(self, files: dict, parent_version: int | None = None) -> PolicyManifest:
        return PolicyManifest(
            version=self.version,
            parent_version=self.version - 1 if parent_version is None else parent_version,
            created_at=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            training_snapshot=0,
            model_file=MODEL_NAME,
            files=files,
            inputs=input_specs(self.observation, self.action),
            outputs=output_specs(self.action),
            observation=self.observation,
            action=self.action,
            normalization=self.normalization,
            flow_steps=self.flow_steps,
            reference_io_file=REFERENCE_IO_NAME,
            reference_atol=1e-4,
            algorithm="synthetic",
            notes=self.notes,
        )

    def write(self, folder: str | Path) -> Path:
        """Write policy.onnx, reference_io.npz and manifest.json (with sha256s) into ``folder``."""
        import onnx

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        onnx.save(self.onnx_model(), str(folder / MODEL_NAME))
        ref_in = self.reference_inputs()
        save_reference_io(folder / REFERENCE_IO_NAME, ref_in, {ACTIONS_OUTPUT: self.forward(ref_in)})
        files = {name: file_entry(folder / name) for name in (MODEL_NAME, REFERENCE_IO_NAME)}
        (folder / MANIFEST_NAME).write_text(self.manifest(files).to_json())
        return folder


def _normalization(
    state_dim: int, action_dim: int, state_mean=None, state_std=None, action_mean=None, action_std=None
) -> Normalization:
    def vec(v, n: int, default: float) -> list[float]:
        return [float(x) for x in (np.full(n, default) if v is None else np.broadcast_to(np.asarray(v, float), (n,)))]

    return Normalization(
        vec(state_mean, state_dim, 0.0),
        vec(state_std, state_dim, 1.0),
        vec(action_mean, action_dim, 0.0),
        vec(action_std, action_dim, 1.0),
    )


def drift_policy(
    version: int,
    delta: np.ndarray,
    *,
    state_mean=None,
    state_std=None,
    action_mean=None,
    action_std=None,
    action: ActionSpec | None = None,
    cameras: Sequence[str] = (),
    image_size: Sequence[int] = (),
    **kwargs,
) -> SyntheticPolicy:
    """Closed loop on joint positions: row h of the de-normalised chunk is ``state + (h+1) * delta``.

    Normalisation statistics are arbitrary (defaults 0/1); the weights absorb them so the
    de-normalised output is exact, which checks that the robot applies the manifest's statistics.
    ``cameras``/``image_size`` add the images input (weighted by ``w_image``, default 0).
    """
    action = action or ActionSpec()
    h, a = action.horizon, action.dim
    delta = np.broadcast_to(np.asarray(delta, np.float64), (a,))
    obs = ObservationSpec(
        state_source="joint_positions",
        state_dim=a,
        cameras=list(cameras),
        image_size=[int(x) for x in image_size] if cameras else [],
    )
    norm = _normalization(a, a, state_mean, state_std, action_mean, action_std)
    s_s, m_s = np.asarray(norm.state_std), np.asarray(norm.state_mean)
    s_a, m_a = np.asarray(norm.action_std), np.asarray(norm.action_mean)
    w = np.zeros((a, h, a))
    for j in range(a):
        w[j, :, j] = s_s[j] / s_a[j]
    bias = (m_s - m_a + np.arange(1, h + 1)[:, None] * delta[None]) / s_a
    return SyntheticPolicy(version, obs, action, norm, w.reshape(a, h * a), bias, **kwargs)


def target_policy(
    version: int,
    target: np.ndarray,
    *,
    observation: ObservationSpec | None = None,
    action: ActionSpec | None = None,
    action_mean=None,
    action_std=None,
    **kwargs,
) -> SyntheticPolicy:
    """Open loop: every row of the de-normalised chunk is ``target`` (plus noise_scale * flow).

    ``observation`` picks the inputs (e.g. ``state_source="sim_state"`` with cameras); they feed
    the graph with zero weights unless ``w_task`` / ``w_image`` are given.
    """
    action = action or ActionSpec()
    observation = observation or ObservationSpec()
    a = action.dim
    norm = _normalization(observation.state_dim, a, None, None, action_mean, action_std)
    target = np.broadcast_to(np.asarray(target, np.float64), (a,))
    bias = np.broadcast_to((target - np.asarray(norm.action_mean)) / np.asarray(norm.action_std), (action.horizon, a))
    w = np.zeros((observation.state_dim, action.horizon * a))
    return SyntheticPolicy(version, observation, action, norm, w, bias, **kwargs)
