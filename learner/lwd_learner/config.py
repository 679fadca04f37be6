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
import json
import typing
from dataclasses import dataclass
from typing import Any, Literal

ValueMode = Literal["divl", "expectile"]
Conditioning = Literal["concat", "film"]
TauMode = Literal["adaptive", "constant"]


@dataclass(frozen=True)
class NetworkConfig:
    """Shapes and widths of the CPU-sized networks (see :mod:`lwd_learner.networks`)."""

    obs_dim: int = 64
    horizon: int = 30
    action_dim: int = 16
    policy_hidden: tuple[int, ...] = (256, 256, 256)
    # "film": the velocity trunk's hidden layers are also scaled and shifted by (obs embedding, flow
    # time), DiT-style adaLN with zero-initialised modulation; "concat": those only enter as inputs
    policy_conditioning: Conditioning = "concat"
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
    # QAM noise schedule sigma_w (see lwd_learner.qam): "lwd" (default) is the paper's eq. 9,
    # sigma = sqrt(2 (1 - w) w) on a deterministic rollout of the frozen reference; "memoryless" is
    # Adjoint Matching's / the QAM reference's sigma = sqrt(2 (1 - w) / w) on SDE rollouts of the
    # current policy (fixed point: the exact tilt of eq. 8). ~15% more CPU per update (default
    # CPU model, batch 256: 4.4 vs 5.1 updates per CPU-second).
    noise_schedule: Literal["lwd", "memoryless"] = "lwd"

    def __post_init__(self) -> None:
        if self.noise_schedule not in ("lwd", "memoryless"):
            raise ValueError(f"PolicyConfig.noise_schedule must be 'lwd' or 'memoryless', got {self.noise_schedule!r}")


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
class HGDAggerConfig:
    """HG-DAgger baseline (App. C1): flow-matching BC on intervention and successful-episode samples.

    Per-sample weight: ``intervention_weight`` if the sample is a human intervention, else
    ``success_weight`` if its episode succeeded, else 0 (autonomous samples of failed episodes
    are not imitated). The loss is the weighted mean over the batch (sum of weighted losses over
    the sum of weights). Equal weights (the default) treat every kept sample alike, as
    aggregating intervention segments and successful rollouts into one BC buffer does.
    """

    intervention_weight: float = 1.0
    success_weight: float = 1.0


@dataclass(frozen=True)
class RecapConfig:
    """RECAP baseline (App. C1, following pi*0.6): advantage-conditioned flow-matching BC.

    - ``positive_fraction``: the global advantage threshold is the (1 - 0.3) quantile, so 30% of
      transitions are labelled positive (App. C1). Trained online, the threshold is an EMA (rate
      ``threshold_ema``) of per-batch quantiles; a batch key ``positive`` overrides the labels
      with ones computed over the whole dataset (see :mod:`lwd_learner.baselines.recap`).
    - ``value_target``: ``"mc"`` (RECAP: Monte-Carlo return-to-go, batch key ``return_to_go``)
      or ``"td"`` (``reward + discount * E[V_target(next_obs)]``, for data without returns).
    - ``label_dropout``: probability of replacing the indicator by "none" during training so the
      same network is also an unconditional policy (needed for CFG). Our choice: 0.3.
    - ``cfg_weight``: inference velocity ``v_none + w (v_positive - v_none)``; 1.0 means plain
      conditioning on "positive" (one network pass per Euler step).
    - ``intervention_positive``: human interventions/corrections are positive regardless of their
      advantage (eq. 36, ``c_t = 1``).
    - ``value_warmup_steps``: updates that train only the value model before the policy starts
      (RECAP fits the value model before labelling).
    """

    positive_fraction: float = 0.3
    value_target: Literal["mc", "td"] = "mc"
    label_dropout: float = 0.3
    cfg_weight: float = 1.0
    threshold_ema: float = 0.01
    intervention_positive: bool = True
    value_warmup_steps: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.positive_fraction < 1.0:
            raise ValueError(f"RecapConfig.positive_fraction must be in (0, 1), got {self.positive_fraction}")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"RecapConfig.label_dropout must be in [0, 1), got {self.label_dropout}")
        if self.value_target not in ("mc", "td"):
            raise ValueError(f"RecapConfig.value_target must be 'mc' or 'td', got {self.value_target!r}")
        if not 0.0 < self.threshold_ema <= 1.0:
            raise ValueError(f"RecapConfig.threshold_ema must be in (0, 1], got {self.threshold_ema}")


@dataclass(frozen=True)
class LearnerConfig:
    """Everything the agent needs; build stage-specific variants with :meth:`offline` / :meth:`online`."""

    network: NetworkConfig = NetworkConfig()
    value: ValueConfig = ValueConfig()
    policy: PolicyConfig = PolicyConfig()
    optim: OptimConfig = OptimConfig()
    hg_dagger: HGDAggerConfig = HGDAggerConfig()
    recap: RecapConfig = RecapConfig()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready nested dict (tuples become lists); inverse of :meth:`from_dict`."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, Any]]) -> LearnerConfig:
        """Rebuild a config from :meth:`to_dict` output (e.g. a checkpoint's metadata).

        Sections or fields missing from ``data`` keep their defaults; unknown ones raise
        ``ValueError`` naming them, so a checkpoint from an incompatible version fails loudly.
        """
        sections = typing.get_type_hints(cls)
        unknown = set(data) - set(sections)
        if unknown:
            raise ValueError(f"LearnerConfig.from_dict: unknown sections {sorted(unknown)}")
        built = {}
        for name, section_cls in sections.items():
            fields = data.get(name, {})
            hints = typing.get_type_hints(section_cls)
            bad = set(fields) - set(hints)
            if bad:
                raise ValueError(f"LearnerConfig.from_dict: unknown fields {sorted(bad)} in section {name!r}")
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
            built[name] = section_cls(**kwargs)
        return cls(**built)

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
