"""Learner checkpoints with Orbax: train state + optimiser states + step + RNG key + config.

One :class:`Checkpointer` owns one directory with one sub-directory per integer step (Orbax
``CheckpointManager``; saves are atomic: a step directory appears only once complete, so a
crash mid-save leaves the previous checkpoint as the latest). Each step holds two items:

- ``train``: a pytree ``{"state": <method state>, "rng": uint32 key data}`` (Orbax
  ``StandardSave``; any ``flax.struct`` state of :mod:`lwd_learner.agent` or
  :mod:`lwd_learner.baselines` works, optimiser states included);
- ``meta``: JSON with the :class:`~lwd_learner.config.LearnerConfig`, the RNG implementation
  and free-form ``extra`` (method name, replay snapshot version, stage, ...).

Resuming means: restore, then keep calling ``update`` with the restored key stream; the next
loss equals the uninterrupted run's bit for bit on the same machine (tested).

Multi-host (``jax.distributed``): every process calls :meth:`Checkpointer.save` /
:meth:`Checkpointer.restore` with the same step on a directory all hosts can reach (shared
filesystem or an object-store path Orbax supports); Orbax writes each array once and
coordinates the commit across processes. Restoring into an ``abstract_state`` whose leaves
carry shardings (e.g. from :func:`lwd_learner.parallel.replicate`) places the arrays directly.

Compatible with ``orbax-checkpoint>=0.11.6,<0.11.37`` (the range the optional ``jax2onnx``
export extra allows) and with 0.12.x: only the ``CheckpointManager`` / ``args.Composite`` /
``StandardSave`` / ``JsonSave`` API is used.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lwd_learner.config import LearnerConfig

_TRAIN, _META = "train", "meta"


@dataclasses.dataclass(frozen=True)
class Restored:
    """What :meth:`Checkpointer.restore` returns."""

    step: int
    state: Any
    key: jax.Array
    config: LearnerConfig
    extra: dict[str, Any]


def _key_to_data(key: jax.Array) -> tuple[np.ndarray, str | None]:
    """``(uint32 key data, impl name)``; impl ``None`` for a legacy raw ``uint32`` key."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(key)), str(jax.random.key_impl(key))
    if key.dtype != jnp.uint32:
        raise TypeError(f"checkpoint: rng key must be a typed JAX key or uint32 key data, got dtype {key.dtype}")
    return np.asarray(key), None


def _data_to_key(data: np.ndarray, impl: str | None) -> jax.Array:
    data = jnp.asarray(data, jnp.uint32)
    return data if impl is None else jax.random.wrap_key_data(data, impl=impl)


def config_differences(a: LearnerConfig, b: LearnerConfig) -> list[str]:
    """``section.field`` names whose values differ between two configs."""
    da, db = a.to_dict(), b.to_dict()
    return [
        f"{section}.{name}"
        for section in sorted(set(da) | set(db))
        for name in sorted(set(da.get(section, {})) | set(db.get(section, {})))
        if da.get(section, {}).get(name) != db.get(section, {}).get(name)
    ]


class Checkpointer:
    """Save / restore learner checkpoints under ``directory`` (see module docstring).

    Args:
        directory: checkpoint root; created if missing.
        max_to_keep: keep only the newest N steps (``None`` keeps all).
        async_save: let :meth:`save` return while the write finishes in the background; call
            :meth:`wait` (or :meth:`close`) before relying on it. Default synchronous.
    """

    def __init__(self, directory: str | Path, max_to_keep: int | None = 3, async_save: bool = False) -> None:
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=(_TRAIN, _META))

    def save(
        self,
        step: int,
        state: Any,
        *,
        key: jax.Array,
        config: LearnerConfig,
        extra: dict[str, Any] | None = None,
        force: bool = True,
    ) -> bool:
        """Write ``state``, the RNG ``key``, ``config`` and JSON-able ``extra`` as checkpoint ``step``.

        Returns whether a checkpoint was written: False when ``step`` already exists (checkpoints
        are immutable; Orbax would raise on a rewrite).
        """
        if step < 0:
            raise ValueError(f"checkpoint step must be >= 0, got {step}")
        if int(step) in self.all_steps():
            return False
        key_data, impl = _key_to_data(key)
        meta = {
            "config": config.to_dict(),
            "rng_impl": impl,
            "rng_shape": list(key_data.shape),
            "extra": dict(extra or {}),
        }
        args = ocp.args.Composite(
            **{
                _TRAIN: ocp.args.StandardSave({"state": state, "rng": key_data}),
                _META: ocp.args.JsonSave(meta),
            }
        )
        return bool(self._manager.save(int(step), args=args, force=force))

    def latest_step(self) -> int | None:
        """Newest complete step, or ``None`` if the directory holds none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def _resolve_step(self, step: int | None) -> int:
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
        elif step not in self._manager.all_steps():
            raise FileNotFoundError(f"no checkpoint step {step} in {self.directory}; have {self.all_steps()}")
        return int(step)

    def read_meta(self, step: int | None = None) -> tuple[int, LearnerConfig, dict[str, Any]]:
        """``(step, config, extra)`` of ``step`` (default: latest) without touching the arrays.

        Lets a reader build the right agent (and so the abstract state) before :meth:`restore`.
        """
        step = self._resolve_step(step)
        meta = self._manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META]
        return step, LearnerConfig.from_dict(meta["config"]), dict(meta.get("extra", {}))

    def restore(self, abstract_state: Any, step: int | None = None, config: LearnerConfig | None = None) -> Restored:
        """Restore ``step`` (default: latest) into the structure of ``abstract_state``.

        ``abstract_state`` is a state of the same method and config (e.g. ``method.init(key)``
        or its ``jax.eval_shape``); only shapes, dtypes and shardings are used. If ``config`` is
        given, a checkpoint written with a different config raises ``ValueError`` naming the
        differing fields (an agent built from one config must not silently load another's).
        """
        step = self._resolve_step(step)
        meta = self._manager.restore(step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()}))[_META]
        saved_config = LearnerConfig.from_dict(meta["config"])
        if config is not None:
            diff = config_differences(saved_config, config)
            if diff:
                raise ValueError(f"checkpoint {step} in {self.directory} was written with a different config: {diff}")
        target = {
            "state": jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state),
            "rng": jax.ShapeDtypeStruct(tuple(meta["rng_shape"]), np.uint32),
        }
        restored = self._manager.restore(step, args=ocp.args.Composite(**{_TRAIN: ocp.args.StandardRestore(target)}))
        train = restored[_TRAIN]
        return Restored(
            step=int(step),
            state=train["state"],
            key=_data_to_key(train["rng"], meta["rng_impl"]),
            config=saved_config,
            extra=dict(meta.get("extra", {})),
        )

    def wait(self) -> None:
        """Block until an asynchronous save has been committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
