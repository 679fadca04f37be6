"""Turn a learner checkpoint into a policy artifact (what `lwd admin push --checkpoint` runs).

A train state alone cannot become an artifact: the artifact also carries the training data's
normalisation statistics and the observation/action specs the network was trained on, and its
manifest names the replay snapshot the policy was trained through. Learners that checkpoint
record those in the checkpoint's ``extra`` with :func:`policy_extra`; :func:`export_checkpoint`
reads them back, restores the LWD train state and builds the artifact folder with
:func:`lwd_learner.artifact.build_artifact` (export, reference I/O, self-check). Signing is the
publisher's job (``PolicyPublisher.upload`` signs with the admin key).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lwd_learner.config import LearnerConfig
from lwd_learner.dataset import Normalizer
from lwd_protocol.manifest import ActionSpec, Normalization, ObservationSpec, PolicyManifest

POLICY_IO_KEY = "policy_io"  # checkpoint extra: normalisation + observation/action specs
SNAPSHOT_KEY = "snapshot"  # checkpoint extra: the replay snapshot version trained through


class CheckpointPolicyError(ValueError):
    """The checkpoint cannot be exported (written without the policy I/O, or not an LWD state)."""


def policy_extra(normalizer: Normalizer, snapshot: int) -> dict[str, Any]:
    """The checkpoint ``extra`` entries :func:`export_checkpoint` needs (JSON-able)."""
    return {
        POLICY_IO_KEY: {
            "normalization": asdict(normalizer.to_manifest()),
            "observation": asdict(normalizer.observation_spec()),
            "action": asdict(normalizer.action_spec()),
        },
        SNAPSHOT_KEY: int(snapshot),
    }


@dataclass(frozen=True)
class CheckpointPolicy:
    """The exportable policy of one checkpoint step."""

    step: int
    config: LearnerConfig
    policy_params: Any
    normalization: Normalization
    observation: ObservationSpec
    action: ActionSpec
    snapshot: int


def load_checkpoint_policy(directory: str | Path, step: int | None = None) -> CheckpointPolicy:
    """Restore ``step`` (default: latest) of the LWD learner checkpoint in ``directory``."""
    import jax

    from lwd_learner.agent import LWDAgent
    from lwd_learner.checkpoint import Checkpointer

    with Checkpointer(directory, max_to_keep=None) as checkpointer:
        step, config, extra = checkpointer.read_meta(step)
        io = extra.get(POLICY_IO_KEY)
        if not isinstance(io, dict):
            raise CheckpointPolicyError(
                f"checkpoint {step} in {directory} has no {POLICY_IO_KEY!r} entry (normalisation and specs): it was "
                "written by a learner that does not record them (see lwd_learner.checkpoint_policy.policy_extra)"
            )
        agent = LWDAgent(config)
        abstract = jax.eval_shape(agent.init, jax.random.PRNGKey(0))
        try:
            restored = checkpointer.restore(abstract, step, config)
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointPolicyError(f"checkpoint {step} in {directory} is not an LWD train state: {exc}") from exc
    try:
        normalization = Normalization(**io["normalization"])
        observation = ObservationSpec(**io["observation"])
        action = ActionSpec(**io["action"])
    except (KeyError, TypeError) as exc:
        raise CheckpointPolicyError(f"checkpoint {step} in {directory}: unreadable {POLICY_IO_KEY!r}: {exc}") from exc
    return CheckpointPolicy(
        step=step,
        config=config,
        policy_params=jax.device_get(restored.state.policy_params),
        normalization=normalization,
        observation=observation,
        action=action,
        snapshot=int(extra.get(SNAPSHOT_KEY, 0)),
    )


def export_checkpoint(
    directory: str | Path,
    out_dir: str | Path,
    *,
    version: int,
    parent_version: int,
    step: int | None = None,
    notes: str = "",
) -> PolicyManifest:
    """Build the (unsigned) artifact folder ``out_dir`` for checkpoint ``step`` of ``directory``."""
    from lwd_learner.artifact import build_artifact

    policy = load_checkpoint_policy(directory, step)
    return build_artifact(
        out_dir,
        policy.config,
        policy.policy_params,
        normalization=policy.normalization,
        observation=policy.observation,
        action=policy.action,
        version=version,
        parent_version=parent_version,
        training_snapshot=policy.snapshot,
        algorithm="lwd (DIVL + QAM)",
        notes=notes or f"exported from checkpoint step {policy.step}",
    )
