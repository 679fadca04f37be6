"""Build a policy artifact folder: policy.onnx + reference_io.npz + manifest.json (lwd_protocol contract).

``build_artifact`` is the learner's last step before publishing a version:

1. export ``f_theta`` with the full Euler sampler (:func:`lwd_learner.export.export_policy`);
2. draw a few random contract inputs and store them with the *JAX* outputs of the learner's own
   sampler (``LWDAgent.sample_actions``) as the reference I/O, so every robot engine (ORT CPU/CUDA,
   TensorRT) is checked against the training framework, not against another export;
3. self-check: run the ONNX file through onnxruntime on those inputs and refuse the artifact when
   it differs from JAX by more than ``reference_atol``;
4. write the manifest (files with sha256/size, the contract's inputs/outputs, flow steps and
   time convention, lineage, UTC creation time), optionally signed through the ``sign`` hook.

Everything is written into a hidden temp folder beside ``out_dir`` and renamed into place at the
end, so a reader never sees a half-written artifact and a failed build leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lwd_learner.agent import LWDAgent
from lwd_learner.config import LearnerConfig
from lwd_learner.export import (
    DEFAULT_OPSET,
    ExportError,
    Params,
    check_exportable,
    export_policy,
    random_reference_inputs,
)
from lwd_protocol.manifest import ActionSpec, FileEntry, Normalization, ObservationSpec, PolicyManifest, file_entry
from lwd_protocol.policy_io import (
    ACTIONS_OUTPUT,
    NOISE_INPUT,
    STATE_INPUT,
    TASK_INPUT,
    check_io_contract,
    input_specs,
    output_specs,
    save_reference_io,
)
from lwd_protocol.store import MANIFEST_NAME, MODEL_NAME, REFERENCE_IO_NAME

SignHook = Callable[[PolicyManifest], PolicyManifest | None]
DEFAULT_REFERENCE_COUNT = 4
_PLACEHOLDER_SHA = "0" * 64


@dataclass(frozen=True)
class ArtifactTimings:
    """Seconds spent per stage of one :func:`build_artifact` call (``on_timings``), for logs and benches."""

    export_s: float
    reference_s: float
    self_check_s: float
    total_s: float
    self_check_max_abs_err: float


def utc_now_iso() -> str:
    """``2026-11-21T06:40:20Z``: the manifest's ``created_at`` format."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def build_artifact(
    out_dir: str | Path,
    agent: LWDAgent | LearnerConfig,
    params: Params,
    *,
    normalization: Normalization,
    observation: ObservationSpec,
    version: int,
    parent_version: int,
    training_snapshot: int,
    action: ActionSpec | None = None,
    opset: int = DEFAULT_OPSET,
    reference_count: int = DEFAULT_REFERENCE_COUNT,
    reference_seed: int = 0,
    reference_atol: float = 1e-4,
    algorithm: str = "lwd",
    notes: str = "",
    sign: SignHook | None = None,
    created_at: str | None = None,
    on_timings: Callable[[ArtifactTimings], None] | None = None,
) -> PolicyManifest:
    """Export ``params`` (the policy ``f_theta``) as a complete artifact folder ``out_dir``; return its manifest.

    Args:
        out_dir: the artifact folder to create; it must not exist (versions are immutable).
        agent: the learner (or its config) whose velocity field ``params`` belong to.
        params: policy parameters, e.g. ``TrainState.policy_params``.
        normalization / observation: from the training data, e.g. ``Normalizer.to_manifest()`` and
            ``Normalizer.observation_spec()``; the network's ``obs_dim`` must equal
            ``state_dim + len(tasks)``.
        version / parent_version / training_snapshot: lineage written to the manifest.
        action: the robot's action spec (default: ``lwd_protocol.robot_spec``).
        reference_count / reference_seed: how many random reference rows, and their seed.
        reference_atol: the tolerance robots validate their engine with; also this build's self-check.
        sign: optional hook that fills ``manifest.signature``, e.g.
            ``functools.partial(lwd_protocol.signing.sign_manifest, private_key=key)``; it is called
            once every file is hashed, just before ``manifest.json`` is written.
        created_at: ISO UTC timestamp; default now.
        on_timings: called with the per-stage :class:`ArtifactTimings` after a successful build.

    Raises:
        ExportError / ExportDependencyError: the policy cannot be exported (see :mod:`lwd_learner.export`)
            or the exported graph disagrees with JAX beyond ``reference_atol``.
        ManifestError: the lineage, normalisation or specs are inconsistent (checked before exporting).
        FileExistsError: ``out_dir`` exists.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"artifact folder {out_dir} exists; every version gets a fresh folder")
    if not out_dir.parent.is_dir():
        raise FileNotFoundError(f"parent folder {out_dir.parent} does not exist")
    if reference_count < 1:
        raise ValueError(f"reference_count must be >= 1, got {reference_count}")
    agent = agent if isinstance(agent, LWDAgent) else LWDAgent(agent)
    action = action if action is not None else ActionSpec()

    stamp = created_at or utc_now_iso()

    def manifest_with(files: dict[str, FileEntry]) -> PolicyManifest:
        return PolicyManifest(
            version=version,
            parent_version=parent_version,
            created_at=stamp,
            training_snapshot=training_snapshot,
            model_file=MODEL_NAME,
            files=files,
            inputs=input_specs(observation, action),
            outputs=output_specs(action),
            observation=observation,
            action=action,
            normalization=normalization,
            flow_steps=agent.config.policy.flow_steps,
            reference_io_file=REFERENCE_IO_NAME,
            reference_atol=reference_atol,
            algorithm=algorithm,
            notes=notes,
        )

    # Fail on bad lineage / normalisation / specs before spending seconds on the export.
    net = agent.config.network
    check_exportable(net.obs_dim, net.horizon, net.action_dim, observation, action)
    placeholder = {name: FileEntry(_PLACEHOLDER_SHA, 0) for name in (MODEL_NAME, REFERENCE_IO_NAME)}
    draft = manifest_with(placeholder)
    draft.validate()
    check_io_contract(draft)

    tmp = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        export_policy(agent, params, observation, action, tmp / MODEL_NAME, opset=opset)
        t1 = time.perf_counter()
        inputs = random_reference_inputs(observation, action, reference_count, reference_seed)
        outputs = {ACTIONS_OUTPUT: jax_reference_actions(agent, params, inputs)}
        save_reference_io(tmp / REFERENCE_IO_NAME, inputs, outputs)
        _fsync_file(tmp / REFERENCE_IO_NAME)
        t2 = time.perf_counter()
        err = onnx_max_abs_error(tmp / MODEL_NAME, inputs, outputs[ACTIONS_OUTPUT])
        if not err <= reference_atol:
            raise ExportError(
                f"exported policy differs from JAX by {err:.3g} on the reference inputs (> reference_atol "
                f"{reference_atol:g}); refusing to publish it"
            )
        t3 = time.perf_counter()
        manifest = manifest_with({name: file_entry(tmp / name) for name in (MODEL_NAME, REFERENCE_IO_NAME)})
        manifest.validate()
        check_io_contract(manifest)
        manifest.verify_files(tmp)
        if sign is not None:
            signed = sign(manifest)
            manifest = signed if isinstance(signed, PolicyManifest) else manifest
            if manifest.signature is None:
                raise ExportError("the sign hook returned without filling manifest.signature")
        _write_synced(tmp / MANIFEST_NAME, manifest.to_json().encode())
        _fsync_dir(tmp)
        try:
            os.rename(tmp, out_dir)
        except OSError as exc:
            raise FileExistsError(f"artifact folder {out_dir} appeared while building: {exc}") from exc
        _fsync_dir(out_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if on_timings is not None:
        on_timings(ArtifactTimings(t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t_start, err))
    return manifest


def jax_reference_actions(agent: LWDAgent, params: Params, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The learner's own sampler (``LWDAgent.sample_actions``) on contract inputs; ``(B, H, A)`` float32."""
    state = np.asarray(inputs[STATE_INPUT], np.float32)
    obs = state if TASK_INPUT not in inputs else np.concatenate([state, inputs[TASK_INPUT]], axis=-1)
    return np.asarray(agent.sample_actions(params, obs, np.asarray(inputs[NOISE_INPUT], np.float32)), np.float32)


def onnx_max_abs_error(model_path: Path, inputs: dict[str, np.ndarray], expected: np.ndarray) -> float:
    """Max ``|onnxruntime(model)(inputs) - expected|`` on CPU (the exporter's own self-check)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
    (got,) = session.run([ACTIONS_OUTPUT], inputs)
    if got.shape != expected.shape:
        raise ExportError(f"exported policy returns shape {got.shape}, JAX returns {expected.shape}")
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    return float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf")


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
