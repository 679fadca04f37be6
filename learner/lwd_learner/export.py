"""Export a flow policy to ONNX under the policy tensor contract (:mod:`lwd_protocol.policy_io`).

The exported graph is the *whole* sampler a robot runs, so no learner code is needed there:

    inputs   state (B, S) [, task (B, T)], noise (B, H, A)        (policy_io.input_specs order)
    obs    = concat(state, task)                                   (dataset.Normalizer.obs layout)
    a_0    = noise;  a_{k+1} = a_k + f(obs, a_k, k/N) / N,  k < N  (flow.euler_sample, w=0 noise)
    output   actions = a_N (B, H, A), normalised units

Why these choices (see /work/shared/env-notes.md, JAX/ONNX):

- noise is a graph input: an in-graph ``jax.random`` would become a fixed-seed RandomNormal, the
  robot would lose control of its randomness and reference I/O would not be reproducible;
- the batch dimension is symbolic (``B``): the learner validates at batch N, robots run batch 1;
- ``ir_version = 10``: onnx 1.23 writes IR v14, which onnxruntime 1.31 rejects;
- every weight is stored inside the one ``.onnx`` file (a ~0.5M-parameter MLP is ~2 MB), written
  to a path that must not exist yet: re-exporting onto an old path would append to a stale
  ``.onnx.data`` and the manifest lists exactly one model file;
- ``CastLike`` nodes whose target type is known are rewritten to ``Cast``: onnxruntime cannot
  constant-fold ``CastLike`` and warns about it on every session it creates.

jax2onnx is an optional dependency (the learner's ``export`` extra): it pins and drags packages
the training path does not need. It is imported lazily; without it :func:`export_onnx` raises
:class:`ExportDependencyError` saying what to install.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lwd_learner import flow
from lwd_learner.agent import LWDAgent
from lwd_learner.config import LearnerConfig
from lwd_learner.networks import VelocityField
from lwd_protocol.manifest import ActionSpec, ObservationSpec, PolicyManifest, TensorSpec
from lwd_protocol.policy_io import (
    NOISE_INPUT,
    STATE_INPUT,
    STATE_SOURCES,
    TASK_INPUT,
    input_specs,
    output_specs,
)

Params = Any
Sampler = Callable[[jax.Array, jax.Array], jax.Array]  # (obs (B, D), noise (B, H, A)) -> actions (B, H, A)

MIN_OPSET, MAX_OPSET = 17, 20
DEFAULT_OPSET = 20  # Gelu is a native op from opset 20; older jax2onnx releases emit it at any opset
IR_VERSION = 10
BATCH_DIM = "B"
MAX_PROTO_BYTES = 2**31 - 1  # protobuf limit for a single-file model
FLOW_TIME_CONVENTION = next(f.default for f in dataclasses.fields(PolicyManifest) if f.name == "flow_time_convention")
INSTALL_HINT = "pip install -e 'learner[export]'  (or: pip install -c constraints.txt jax2onnx)"
_NOISY_LOGGERS = ("jax2onnx", "onnx_ir")  # plugin-import tracebacks, "value type not known" spam, jax deprecations


class ExportError(RuntimeError):
    """The policy cannot be exported, or the exported graph breaks the policy I/O contract."""


class ExportDependencyError(ImportError):
    """jax2onnx (the learner's optional ``export`` extra) is not installed."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how long it took."""

    path: Path
    opset: int
    ir_version: int
    size_bytes: int
    num_parameters: int  # scalars stored as initialisers
    seconds: float
    exporter: str  # e.g. "jax2onnx 0.12.5"


def import_jax2onnx() -> Any:
    """The ``jax2onnx`` module, or :class:`ExportDependencyError` naming the extra to install."""
    try:
        with _quiet_loggers():
            import jax2onnx
    except ImportError as exc:
        raise ExportDependencyError(
            f"ONNX policy export needs the optional dependency jax2onnx ({exc}); install it with: {INSTALL_HINT}"
        ) from exc
    return jax2onnx


def exporter_version() -> str:
    """``"jax2onnx <version>"`` of the installed exporter (ExportDependencyError when absent)."""
    import_jax2onnx()
    from importlib.metadata import version

    return f"jax2onnx {version('jax2onnx')}"


# ----------------------------------------------------------------------------- the policy function


def check_exportable(
    network_obs_dim: int, horizon: int, action_dim: int, observation: ObservationSpec, action: ActionSpec
) -> None:
    """Refuse a policy whose network shapes do not fit the contract's observation/action spec."""
    if observation.state_source not in STATE_SOURCES:
        raise ExportError(f"observation.state_source {observation.state_source!r} is not one of {STATE_SOURCES}")
    if observation.cameras:
        raise ExportError(
            f"observation declares cameras {observation.cameras}, but the learner's velocity field takes only a "
            "low-dim observation (state [+ task one-hot]); image policies cannot be exported by this module"
        )
    if observation.state_dim < 1:
        raise ExportError(f"observation.state_dim must be >= 1, got {observation.state_dim}")
    want = observation.state_dim + len(observation.tasks)
    if network_obs_dim != want:
        raise ExportError(
            f"network obs_dim {network_obs_dim} != state_dim {observation.state_dim} + {len(observation.tasks)} "
            f"task(s) = {want}: the observation spec does not describe what the policy was trained on"
        )
    if (horizon, action_dim) != (action.horizon, action.dim):
        raise ExportError(
            f"network chunk (horizon {horizon}, action_dim {action_dim}) != action spec "
            f"(horizon {action.horizon}, {action.dim} joints)"
        )


def assemble_obs(state: jax.Array, task: jax.Array | None = None) -> jax.Array:
    """The learner's observation vector from contract inputs: ``concat(state, task one-hot)``.

    ``state`` is already normalised (the robot applies ``manifest.normalization``); this is the
    layout of :meth:`lwd_learner.dataset.Normalizer.obs`.
    """
    return state if task is None else jnp.concatenate([state, task.astype(state.dtype)], axis=-1)


def lwd_sampler(agent: LWDAgent, params: Params, flow_steps: int | None = None) -> Sampler:
    """Pure ``(obs, noise) -> actions``: encode obs once, then ``flow_steps`` Euler steps of ``f_theta``.

    The same computation as ``LWDAgent.sample_actions``, with ``params`` closed over so an exporter
    stores them as constants. ``flow_steps`` defaults to ``agent.config.policy.flow_steps``.
    """
    velocity = agent.velocity
    steps = agent.config.policy.flow_steps if flow_steps is None else int(flow_steps)
    if steps < 1:
        raise ExportError(f"flow_steps must be >= 1, got {steps}")

    def sample(obs: jax.Array, noise: jax.Array) -> jax.Array:
        z = velocity.apply(params, obs, method=VelocityField.embed)

        def field(z_: jax.Array, actions: jax.Array, w: jax.Array) -> jax.Array:
            return velocity.apply(params, z_, actions, w, method=VelocityField.velocity)

        return flow.euler_sample(field, z, noise, steps)

    return sample


def contract_policy_fn(sampler: Sampler, observation: ObservationSpec, action: ActionSpec) -> Callable[..., jax.Array]:
    """``policy(*inputs) -> actions`` taking the contract's inputs positionally, in ``input_specs`` order."""
    names = [t.name for t in input_specs(observation, action)]

    def policy(*args: jax.Array) -> jax.Array:
        if len(args) != len(names):
            raise TypeError(f"policy takes inputs {names}, got {len(args)} arrays")
        feeds = dict(zip(names, args, strict=True))
        return sampler(assemble_obs(feeds[STATE_INPUT], feeds.get(TASK_INPUT)), feeds[NOISE_INPUT])

    return policy


def random_reference_inputs(
    observation: ObservationSpec, action: ActionSpec, count: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """``count`` contract inputs: N(0, 1) normalised state and noise, a valid one-hot task per row.

    Tasks cycle through ``observation.tasks`` in a random order so a few rows cover several tasks.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if observation.cameras:
        raise ExportError("reference inputs for image policies are not supported")
    rng = np.random.default_rng(seed)
    inputs = {STATE_INPUT: rng.standard_normal((count, observation.state_dim)).astype(np.float32)}
    if observation.tasks:
        order = rng.permutation(len(observation.tasks))
        ids = order[np.arange(count) % len(order)]
        inputs[TASK_INPUT] = np.eye(len(observation.tasks), dtype=np.float32)[ids]
    inputs[NOISE_INPUT] = rng.standard_normal((count, action.horizon, action.dim)).astype(np.float32)
    return inputs


# ----------------------------------------------------------------------------- export


def export_policy(
    agent: LWDAgent | LearnerConfig,
    params: Params,
    observation: ObservationSpec,
    action: ActionSpec,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
) -> ExportResult:
    """Export the LWD policy ``f_theta`` (``params``) with ``agent.config.policy.flow_steps`` Euler steps."""
    agent = agent if isinstance(agent, LWDAgent) else LWDAgent(agent)
    net = agent.config.network
    check_exportable(net.obs_dim, net.horizon, net.action_dim, observation, action)
    steps = agent.config.policy.flow_steps
    return export_onnx(lwd_sampler(agent, params), observation, action, path, opset=opset, flow_steps=steps)


def export_onnx(
    sampler: Sampler,
    observation: ObservationSpec,
    action: ActionSpec,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    flow_steps: int | None = None,
    model_name: str = "lwd_policy",
) -> ExportResult:
    """Trace ``sampler`` under the contract's inputs and write one self-contained ONNX file at ``path``.

    ``path`` (and a sibling ``<name>.data``) must not exist. ``flow_steps`` is recorded in the
    model's metadata only. Raises :class:`ExportError` when the graph fails the ONNX checker or
    does not have exactly the contract's input/output names, dtypes and shapes.
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    path = Path(path)
    for existing in (path, path.with_name(path.name + ".data")):
        if existing.exists():
            raise FileExistsError(f"{existing} exists: export to a fresh path (a re-export would mix old data in)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist")
    if observation.cameras:
        raise ExportError(f"observation declares cameras {observation.cameras}; image inputs are not exportable here")
    jax2onnx = import_jax2onnx()
    import onnx

    specs_in = input_specs(observation, action)
    specs_out = output_specs(action)
    shapes = [(BATCH_DIM, *t.shape[1:]) for t in specs_in]
    t0 = time.perf_counter()
    with _quiet_loggers():
        try:
            model = jax2onnx.to_onnx(
                contract_policy_fn(sampler, observation, action),
                shapes,
                opset=opset,
                model_name=model_name,
                input_names=[t.name for t in specs_in],
                output_names=[t.name for t in specs_out],
            )
        except Exception as exc:  # jax2onnx raises assorted types for unsupported primitives
            raise ExportError(f"jax2onnx could not convert the policy: {type(exc).__name__}: {exc}") from exc
    model.ir_version = IR_VERSION
    _rewrite_castlike(model)
    _set_output_types(model, specs_out)
    _check_model(model, opset, specs_in, specs_out)
    meta = {
        "lwd.contract": "lwd_protocol.policy_io",
        "lwd.flow_time_convention": FLOW_TIME_CONVENTION,
        "lwd.exporter": exporter_version(),
    }
    if flow_steps is not None:
        meta["lwd.flow_steps"] = str(int(flow_steps))
    onnx.helper.set_model_props(model, meta)
    data = model.SerializeToString()
    if len(data) > MAX_PROTO_BYTES:
        raise ExportError(f"model is {len(data)} bytes, over the 2 GiB single-file protobuf limit")
    _write_new_file(path, data)
    num_params = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    return ExportResult(path, opset, IR_VERSION, len(data), num_params, time.perf_counter() - t0, meta["lwd.exporter"])


# ----------------------------------------------------------------------------- graph helpers


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"jax2onnx(\.|$)")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _rewrite_castlike(model: Any) -> None:
    """``CastLike(x, like)`` -> ``Cast(x, to=type(like))`` wherever shape inference knows ``like``'s type."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({init.name: init.data_type for init in graph.initializer})
    for i, node in enumerate(model.graph.node):
        if node.op_type != "CastLike" or node.domain not in ("", "ai.onnx"):
            continue
        elem = types.get(node.input[1], 0)
        if elem:
            model.graph.node[i].CopyFrom(
                onnx.helper.make_node("Cast", [node.input[0]], list(node.output), name=node.name, to=elem)
            )


def _set_output_types(model: Any, specs_out: list[TensorSpec]) -> None:
    """Declare the outputs' dtype and (B, H, A) shape; jax2onnx leaves them untyped."""
    import onnx

    by_name = {t.name: t for t in specs_out}
    for out in model.graph.output:
        spec = by_name.get(out.name)
        if spec is None:
            continue
        dims = [BATCH_DIM if d < 0 else d for d in spec.shape]
        elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(spec.dtype))
        out.CopyFrom(onnx.helper.make_tensor_value_info(spec.name, elem, dims))


def _check_model(model: Any, opset: int, specs_in: list[TensorSpec], specs_out: list[TensorSpec]) -> None:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"exported graph fails the ONNX checker at opset {opset}: {exc}") from exc
    domains = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    if domains != {"ai.onnx": opset}:
        raise ExportError(f"exported graph imports opsets {domains}, expected only ai.onnx {opset}")
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise ExportError(f"initializer {init.name!r} is stored as external data; the artifact needs one file")
    _check_values("input", list(model.graph.input), specs_in)
    _check_values("output", list(model.graph.output), specs_out)


def _check_values(kind: str, values: list[Any], specs: list[TensorSpec]) -> None:
    import onnx

    got_names = [v.name for v in values]
    if got_names != [t.name for t in specs]:
        raise ExportError(f"exported graph {kind}s {got_names} != policy contract {[t.name for t in specs]}")
    for value, spec in zip(values, specs, strict=True):
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type) if tensor.elem_type else None
        dims = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in tensor.shape.dim]
        want = [BATCH_DIM if d < 0 else d for d in spec.shape]
        if dtype != np.dtype(spec.dtype) or dims != want:
            raise ExportError(f"exported {kind} {spec.name!r} is {dtype} {dims}, contract says {spec.dtype} {want}")


def _write_new_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path`` and link it into place; never overwrite."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # fails with FileExistsError if someone created path meanwhile
    finally:
        Path(tmp).unlink(missing_ok=True)
