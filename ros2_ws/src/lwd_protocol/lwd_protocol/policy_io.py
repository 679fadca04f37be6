"""The policy's numeric I/O contract: which tensors an exported policy takes and returns.

Every exported policy (learner ``export``) and every robot backend (controller, policy sync's
validation) meet here, so the names, shapes and the normalisation live in one place:

inputs
    ``state``  ``(B, state_dim)`` float32 -- the low-dim state named by
               ``manifest.observation.state_source`` ("joint_positions" on hardware, "sim_state"
               for CPU-scale sim policies), *normalised* with ``manifest.normalization.state_*``.
    ``task``   ``(B, len(observation.tasks))`` float32 one-hot of the instruction's task, present
               only when the policy is multi-task (``observation.tasks`` non-empty).
    ``images`` ``(B, n_cameras, H, W, 3)`` uint8, present only when ``observation.cameras`` is
               non-empty (camera order = ``observation.cameras``).
    ``noise``  ``(B, H, A)`` float32 -- the flow's initial Gaussian sample ``x_0`` (w=0 noise,
               w=1 data), an input so the robot owns the randomness and the reference I/O is exact.
outputs
    ``actions`` ``(B, H, A)`` float32 -- the action chunk in *normalised* units; the robot
               de-normalises with ``normalization.action_*`` (per joint, or per chunk step and
               joint), adds the measured joint positions to ``action.relative_dims`` (read from
               the raw state at ``action.relative_state_index``), then applies its safety filter.

Reference I/O (``reference_io.npz``) stores arrays under ``in/<name>`` and ``out/<name>``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lwd_protocol.manifest import ActionSpec, ManifestError, ObservationSpec, PolicyManifest, TensorSpec
from lwd_protocol.robot_spec import JOINT_NAMES

STATE_INPUT = "state"
TASK_INPUT = "task"
IMAGES_INPUT = "images"
NOISE_INPUT = "noise"
ACTIONS_OUTPUT = "actions"
STATE_SOURCES = ("joint_positions", "sim_state")
# Where the measured joint positions (JOINT_NAMES order) sit in the sim's privileged state vector;
# lwd_sim lays its state out around this offset.
SIM_STATE_JOINT_OFFSET = 127


def joint_position_index(state_source: str) -> list[int]:
    """Indices of the measured joint positions (``JOINT_NAMES`` order) in a ``state_source`` vector."""
    if state_source == "joint_positions":
        return list(range(len(JOINT_NAMES)))
    if state_source == "sim_state":
        return list(range(SIM_STATE_JOINT_OFFSET, SIM_STATE_JOINT_OFFSET + len(JOINT_NAMES)))
    raise ManifestError(f"state_source {state_source!r} is not one of {STATE_SOURCES}")


def relative_action_spec(state_source: str, relative_dims: list[int], action: ActionSpec | None = None) -> ActionSpec:
    """``action`` (default: the robot's) with ``relative_dims`` anchored on the measured joints of ``state_source``."""
    base = action if action is not None else ActionSpec()
    joints = joint_position_index(state_source)
    return ActionSpec(
        joint_names=list(base.joint_names),
        horizon=base.horizon,
        control_rate_hz=base.control_rate_hz,
        relative_dims=[int(d) for d in relative_dims],
        relative_state_index=[joints[d] for d in relative_dims],
    )


class PolicyInputError(ValueError):
    """An observation that cannot be turned into policy inputs (wrong shape, non-finite, unknown task)."""


def input_specs(observation: ObservationSpec, action: ActionSpec) -> list[TensorSpec]:
    """The model inputs a policy with this observation/action spec must declare, in order."""
    specs = [TensorSpec(STATE_INPUT, [-1, observation.state_dim])]
    if observation.tasks:
        specs.append(TensorSpec(TASK_INPUT, [-1, len(observation.tasks)]))
    if observation.cameras:
        h, w = observation.image_size
        specs.append(TensorSpec(IMAGES_INPUT, [-1, len(observation.cameras), h, w, 3], "uint8"))
    specs.append(TensorSpec(NOISE_INPUT, [-1, action.horizon, action.dim]))
    return specs


def output_specs(action: ActionSpec) -> list[TensorSpec]:
    return [TensorSpec(ACTIONS_OUTPUT, [-1, action.horizon, action.dim])]


def check_io_contract(manifest: PolicyManifest) -> None:
    """Refuse a manifest whose declared inputs/outputs differ from this contract."""
    if manifest.observation.state_source not in STATE_SOURCES:
        raise ManifestError(
            f"observation.state_source {manifest.observation.state_source!r} is not one of {STATE_SOURCES}"
        )
    want_in = input_specs(manifest.observation, manifest.action)
    want_out = output_specs(manifest.action)
    if [(t.name, list(t.shape), t.dtype) for t in manifest.inputs] != [(t.name, t.shape, t.dtype) for t in want_in]:
        raise ManifestError(f"manifest inputs {manifest.inputs} do not match the policy I/O contract {want_in}")
    if [(t.name, list(t.shape), t.dtype) for t in manifest.outputs] != [(t.name, t.shape, t.dtype) for t in want_out]:
        raise ManifestError(f"manifest outputs {manifest.outputs} do not match the policy I/O contract {want_out}")


def task_one_hot(tasks: list[str], task: str) -> np.ndarray:
    if task not in tasks:
        raise PolicyInputError(f"task {task!r} is not one this policy was trained on: {tasks}")
    vec = np.zeros((1, len(tasks)), dtype=np.float32)
    vec[0, tasks.index(task)] = 1.0
    return vec


def build_inputs(
    manifest: PolicyManifest,
    state: np.ndarray,
    noise: np.ndarray,
    task: str = "",
    images: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Batch-1 model inputs from one raw observation, normalised with the manifest's statistics."""
    obs, act = manifest.observation, manifest.action
    state = np.asarray(state, dtype=np.float64).reshape(-1)
    if state.shape != (obs.state_dim,):
        raise PolicyInputError(f"state has {state.size} values, policy expects {obs.state_dim} ({obs.state_source})")
    if not np.all(np.isfinite(state)):
        raise PolicyInputError("state contains NaN or inf")
    norm = manifest.normalization
    state_n = (state - np.asarray(norm.state_mean)) / np.asarray(norm.state_std)
    inputs = {STATE_INPUT: state_n.astype(np.float32)[None]}
    if obs.tasks:
        inputs[TASK_INPUT] = task_one_hot(obs.tasks, task)
    if obs.cameras:
        if images is None:
            raise PolicyInputError(f"policy needs images from cameras {obs.cameras}")
        h, w = obs.image_size
        stack = []
        for cam in obs.cameras:
            if cam not in images:
                raise PolicyInputError(f"image from camera {cam!r} is missing")
            img = np.asarray(images[cam])
            if img.shape != (h, w, 3) or img.dtype != np.uint8:
                raise PolicyInputError(f"camera {cam!r} image is {img.shape} {img.dtype}, expected ({h}, {w}, 3) uint8")
            stack.append(img)
        inputs[IMAGES_INPUT] = np.stack(stack)[None]
    noise = np.asarray(noise, dtype=np.float32)
    if noise.size != act.horizon * act.dim:
        raise PolicyInputError(f"noise has {noise.size} values, expected {act.horizon}x{act.dim}")
    inputs[NOISE_INPUT] = noise.reshape(1, act.horizon, act.dim)
    return inputs


def decode_actions(manifest: PolicyManifest, raw: np.ndarray, state: np.ndarray | None = None) -> np.ndarray:
    """``(H, A)`` joint targets from the model's normalised output (batch 1).

    ``state`` is the raw (un-normalised) state the chunk was computed from; it is required when
    the policy predicts relative actions, whose anchors it holds.
    """
    act = manifest.action
    raw = np.asarray(raw, dtype=np.float64)
    if raw.size != act.horizon * act.dim:
        raise PolicyInputError(f"model output has {raw.size} values, expected {act.horizon}x{act.dim}")
    norm = manifest.normalization
    shape = (act.horizon, act.dim) if len(norm.action_mean) == act.horizon * act.dim else (act.dim,)
    chunk = raw.reshape(act.horizon, act.dim) * np.reshape(norm.action_std, shape) + np.reshape(norm.action_mean, shape)
    if act.relative_dims:
        if state is None:
            raise PolicyInputError("policy predicts relative joint actions; decoding needs the state it saw")
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        if state.shape != (manifest.observation.state_dim,):
            raise PolicyInputError(f"state has {state.size} values, policy expects {manifest.observation.state_dim}")
        chunk[:, act.relative_dims] += state[act.relative_state_index][None, :]
    return chunk


def save_reference_io(path: str | Path, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
    arrays = {f"in/{k}": np.asarray(v) for k, v in inputs.items()}
    arrays.update({f"out/{k}": np.asarray(v) for k, v in outputs.items()})
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_reference_io(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(inputs, outputs) saved by :func:`save_reference_io`; never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as data:
            inputs = {k[3:]: data[k] for k in data.files if k.startswith("in/")}
            outputs = {k[4:]: data[k] for k in data.files if k.startswith("out/")}
    except (OSError, ValueError) as exc:
        raise ManifestError(f"reference I/O file {path} is unreadable: {exc}") from exc
    if not inputs or not outputs:
        raise ManifestError(f"reference I/O file {path} holds no in/ or out/ arrays")
    return inputs, outputs
