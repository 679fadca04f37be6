"""Learner configuration: small frozen dataclasses, one per concern, with the paper's defaults.

Paper defaults (LWD App. B2 / A1): gamma 0.9999, EMA rate 0.005, QAM temperature lambda 2,
tau_base 0.6 offline / 0.9 online, alpha 0.3, K = 201 atoms on [-0.1, 1.1], H = 30,
critic/value Adam lr 5e-4 with cosine decay, policy AdamW with cosine decay, n-step 10 for
long-horizon tasks offline and 1 otherwise and online.

Our choices where the paper is silent or its numbers target a 3B-parameter VLA:
- ``tau_min = 0.5``, ``tau_max = 0.95``: never bootstrap below the median (keeps the asymmetric,
  optimistic-within-support character of IQL, tau > 1/2) and never from the extreme upper tail,
  where a 201-atom histogram fitted on a mini-batch is noisiest. Offline (0.6 - 0.3 H) this
  range is active at H > 1/3; online (0.9 - 0.3 H) it clips only near-uniform distributions.
- policy lr 1e-4 (paper 2e-5): the paper fine-tunes a 300M action expert; our ~0.5M-parameter
  MLP velocity field needs a larger step to move in a comparable number of updates, while 1e-4
  stays well below the SFT lr (3e-4) so QAM refines rather than retrains the reference.
- ``qam_loss_steps = 3``: the QAM regression uses 3 random grid points per sample instead of all
  10 (unbiased for the step mean of eq. 9) to reach ~10 updates/s on 2 CPU cores; set ``None``
  for the exact all-step loss (~7/s), e.g. on a GPU learner.
- global-norm gradient clipping (1.0 policy, 10.0 critic/value): the QAM loss divides by sigma
  and can spike on early, poorly calibrated critics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

ValueMode = Literal["divl", "expectile"]
TauMode = Literal["adaptive", "constant"]


@dataclass(frozen=True)
class NetworkConfig:
    """Shapes and widths of the CPU-sized networks (see :mod:`lwd_learner.networks`)."""

    obs_dim: int = 64
    horizon: int = 30
    action_dim: int = 16
    policy_hidden: tuple[int, ...] = (256, 256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    value_hidden: tuple[int, ...] = (256,)
    obs_hidden: tuple[int, ...] = (256,)
    obs_embed_dim: int = 256
    time_dim: int = 64
    pool_dim: int = 64
    pool_heads: int = 4


@dataclass(frozen=True)
class ValueConfig:
    """DIVL / critic settings (Sec. IV-A, IV-C, App. A1, B2) and the ablation switches.

    ``value_mode="expectile"`` replaces the categorical V by a scalar V trained with the IQL
    expectile loss at level ``tau_base`` on the same EMA-critic targets; there is no entropy then,
    so the bootstrap is V itself whatever ``tau_mode`` says. ``tau_mode="constant"`` uses
    ``tau_base`` as the quantile level for every state. ``n_step`` is consumed by the replay
    reader, which builds ``reward``/``discount`` with :func:`lwd_learner.divl.nstep_returns`.
    """

    value_mode: ValueMode = "divl"
    tau_mode: TauMode = "adaptive"
    num_atoms: int = 201
    v_min: float = -0.1
    v_max: float = 1.1
    tau_base: float = 0.6
    alpha: float = 0.3
    tau_min: float = 0.5
    tau_max: float = 0.95
    gamma: float = 0.9999
    n_step: int = 1
    ema_rate: float = 0.005  # weight of the online critic in each target update


@dataclass(frozen=True)
class PolicyConfig:
    """Flow policy and QAM settings (Sec. III-C, IV-B)."""

    flow_steps: int = 10
    lam: float = 2.0  # QAM temperature lambda of eq. 8/10
    # Grid points drawn per sample (uniformly, with replacement) for the QAM regression; None =
    # all ``flow_steps`` (eq. 9's mean exactly). M = 3 is an unbiased estimate of the same mean
    # and brings the full CPU update from ~7/s to ~10/s at batch 256 (learner/bench/results/).
    qam_loss_steps: int | None = 3


@dataclass(frozen=True)
class OptimConfig:
    """Optimisers and cosine schedules (App. B2 plus the documented choices above)."""

    critic_lr: float = 5e-4
    value_lr: float = 5e-4
    policy_lr: float = 1e-4
    policy_weight_decay: float = 1e-4
    sft_lr: float = 3e-4
    decay_steps: int = 200_000
    final_lr_fraction: float = 0.1
    policy_grad_clip: float = 1.0
    critic_grad_clip: float = 10.0


@dataclass(frozen=True)
class LearnerConfig:
    """Everything the agent needs; build stage-specific variants with :meth:`offline` / :meth:`online`."""

    network: NetworkConfig = NetworkConfig()
    value: ValueConfig = ValueConfig()
    policy: PolicyConfig = PolicyConfig()
    optim: OptimConfig = OptimConfig()

    @property
    def gamma_chunk(self) -> float:
        """Per-chunk discount ``gamma**H``."""
        return self.value.gamma**self.network.horizon

    @classmethod
    def offline(cls, long_horizon: bool = False, **overrides: object) -> LearnerConfig:
        """Offline stage: tau_base 0.6; 10-step chunk TD for long-horizon tasks, else 1-step."""
        value = dataclasses.replace(ValueConfig(), tau_base=0.6, n_step=10 if long_horizon else 1)
        return dataclasses.replace(cls(value=value), **overrides)

    @classmethod
    def online(cls, **overrides: object) -> LearnerConfig:
        """Online stage: tau_base 0.9 and 1-step chunk TD for all tasks."""
        value = dataclasses.replace(ValueConfig(), tau_base=0.9, n_step=1)
        return dataclasses.replace(cls(value=value), **overrides)
