"""Data-parallel learner updates over a ``jax.sharding.Mesh``, on one host or many.

SPMD data parallelism: the parameters / optimiser states are replicated on every device, the
batch is split along its first axis over the mesh's ``data`` axis, and the unchanged update
function is ``jax.jit``-compiled with those in/out shardings. XLA inserts the gradient
all-reduces, so the sharded step computes the same global-batch loss and update as the
single-device step (equal up to float summation order; tested at ~1e-5). Random numbers drawn
inside the step match too (``jax_threefry_partitionable``, the default).

Single host::

    mesh = make_mesh()                      # every local device
    step = data_parallel(method.update_fn, mesh)
    state = replicate(state, mesh)
    state, metrics = step(state, shard_batch(batch, mesh), key)

Multi-host (one process per host, ``jax.distributed``): start every process with the same
coordinator address (host:port of process 0), the process count and its own process id, e.g.

    LWD_COORDINATOR_ADDRESS=10.0.0.1:8476 LWD_NUM_PROCESSES=4 LWD_PROCESS_ID=<0..3> \\
        lwd <learner command>

and call :func:`initialize` (``DistributedConfig.from_env()``) before any other JAX call. The
mesh then spans all hosts' devices; each process passes only ITS part of the global batch to
:func:`shard_batch` (global batch = the processes' local batches concatenated in process
order) and the same replicated state and key. For the batches to be one consistent sample,
every process must read the same replay snapshot: :func:`agreed_snapshot_version` returns the
newest snapshot version every process has (the minimum over processes, via a collective), and
:func:`host_allgather` is the ``allgather`` to give ``SnapshotReplayReader.advance``.
Checkpoints: every process calls :class:`lwd_learner.checkpoint.Checkpointer` with the same step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

State = TypeVar("State")
StepFn = Callable[[Any, Any, jax.Array], tuple[Any, Any]]


@dataclass(frozen=True)
class DistributedConfig:
    """Arguments of ``jax.distributed.initialize`` for one process of a multi-host learner.

    ``coordinator_address`` is ``host:port`` of process 0, identical on every process;
    ``coordinator_bind_address`` (process 0 only) is where its coordinator service listens,
    e.g. ``127.0.0.1:PORT`` for single-machine tests (JAX's default binds all interfaces).
    """

    coordinator_address: str
    num_processes: int
    process_id: int
    coordinator_bind_address: str | None = None
    initialization_timeout_s: int = 300

    def __post_init__(self) -> None:
        if self.num_processes < 1:
            raise ValueError(f"DistributedConfig.num_processes must be >= 1, got {self.num_processes}")
        if not 0 <= self.process_id < self.num_processes:
            raise ValueError(
                f"DistributedConfig.process_id must be in [0, {self.num_processes}), got {self.process_id}"
            )
        host, sep, port = self.coordinator_address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(
                f"DistributedConfig.coordinator_address must be host:port, got {self.coordinator_address!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistributedConfig | None:
        """From ``LWD_COORDINATOR_ADDRESS``, ``LWD_NUM_PROCESSES``, ``LWD_PROCESS_ID`` (and optional
        ``LWD_COORDINATOR_BIND_ADDRESS``); ``None`` when ``LWD_COORDINATOR_ADDRESS`` is unset (one process).
        """
        env = os.environ if environ is None else environ
        address = env.get("LWD_COORDINATOR_ADDRESS")
        if not address:
            return None
        try:
            num, pid = int(env["LWD_NUM_PROCESSES"]), int(env["LWD_PROCESS_ID"])
        except KeyError as exc:
            raise ValueError(f"LWD_COORDINATOR_ADDRESS is set but {exc.args[0]} is not") from None
        except ValueError:
            raise ValueError("LWD_NUM_PROCESSES and LWD_PROCESS_ID must be integers") from None
        return cls(address, num, pid, env.get("LWD_COORDINATOR_BIND_ADDRESS") or None)


def initialize(config: DistributedConfig | None) -> None:
    """Join the multi-host job (``jax.distributed.initialize``); no-op for ``None`` or one process.

    Must run before any other JAX computation in the process.
    """
    if config is None or config.num_processes == 1:
        return
    jax.distributed.initialize(
        coordinator_address=config.coordinator_address,
        num_processes=config.num_processes,
        process_id=config.process_id,
        coordinator_bind_address=config.coordinator_bind_address,
        initialization_timeout=config.initialization_timeout_s,
    )


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """1-D mesh named ``data`` over ``devices`` (default: every device of every process)."""
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("make_mesh: no devices")
    return Mesh(np.asarray(devs), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data``; other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _local_device_count(mesh: Mesh) -> int:
    return sum(1 for d in mesh.devices.flat if d.process_index == jax.process_index())


def replicate(tree: State, mesh: Mesh) -> State:
    """Put a pytree (state, key) on every mesh device; each process passes the same values."""
    sharding = replicated_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x: Any) -> jax.Array:
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(x))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree_util.tree_map(put, tree)


def shard_batch(local_batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble the global batch from this process's rows, split over ``data``.

    One process: ``local_batch`` is the whole batch. Several: each passes its own rows and
    the global batch is their concatenation in process order. Every leaf's leading size must
    be divisible by this process's device count in the mesh.
    """
    sharding, local_devices = batch_sharding(mesh), _local_device_count(mesh)
    out = {}
    for name, value in local_batch.items():
        arr = np.asarray(value)
        if arr.ndim == 0 or arr.shape[0] % local_devices:
            raise ValueError(
                f"shard_batch: {name!r} has shape {arr.shape}; its leading axis must split evenly over "
                f"{local_devices} local device(s)"
            )
        out[name] = jax.make_array_from_process_local_data(sharding, arr)
    return out


def data_parallel(step_fn: StepFn, mesh: Mesh, donate_state: bool = False) -> StepFn:
    """``jit`` a pure ``step(state, batch, key) -> (state, metrics)`` for data parallelism.

    State, key and outputs are replicated; the batch is split over ``data``. ``step_fn`` is a
    method's ``update_fn`` (un-jitted; a jitted one also works, it is inlined).
    """
    rep, data = replicated_sharding(mesh), batch_sharding(mesh)
    return jax.jit(
        step_fn,
        in_shardings=(rep, data, rep),
        out_shardings=(rep, rep),
        donate_argnums=(0,) if donate_state else (),
    )


def to_host(tree: Any) -> Any:
    """Numpy copies of replicated outputs (metrics, params) on any process."""

    def fetch(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.is_fully_replicated:
                raise ValueError("to_host: array is sharded across processes; gather it first")
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree_util.tree_map(fetch, tree)


def host_allgather(values: np.ndarray) -> np.ndarray:
    """Every process's ``values`` stacked along a new leading axis (one process: ``values[None]``).

    The ``allgather`` that :meth:`lwd_learner.replay_reader.SnapshotReplayReader.advance` and
    :func:`lwd_learner.replay_reader.agree_version` take. Integers travel as int32 (JAX without
    x64); values outside int32 raise instead of wrapping.
    """
    arr = np.asarray(values)
    if jax.process_count() == 1:
        return arr[None]
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
            raise ValueError(f"host_allgather: integer values {arr.tolist()} do not fit int32")
        arr = arr.astype(np.int32)
    return np.asarray(multihost_utils.process_allgather(arr))


def agreed_snapshot_version(local_version: int) -> int:
    """The replay snapshot version all processes train on for a step: the min over processes.

    Each process passes the newest committed snapshot version it can read; the minimum is one
    every process has (versions only grow and committed snapshots are immutable), so all hosts
    bind their replay readers to the same snapshot. A collective: every process must call it at
    the same point. Equivalent to ``reader.advance(allgather=host_allgather)`` of
    :class:`lwd_learner.replay_reader.SnapshotReplayReader`.
    """
    version = int(local_version)
    if not 0 <= version < 2**31:
        raise ValueError(f"agreed_snapshot_version: version must be in [0, 2**31), got {version}")
    return int(np.min(host_allgather(np.asarray([version], np.int64))))
