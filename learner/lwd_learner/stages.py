"""The LWD training pipeline (paper Alg. 1): SFT -> frozen reference -> offline RL -> online rounds.

Each stage is a function of (agent, state, data, config, PRNG key) returning the new
:class:`lwd_learner.agent.TrainState` and a log; nothing reads global randomness (the numpy
generator that samples replay rows is seeded from the stage's key).

1. :func:`run_sft` -- flow-matching BC of the reference ``f_beta`` on demonstrations (Alg. 1 l. 2).
   Then :meth:`LWDAgent.start_rl` freezes it and starts ``f_theta`` from it (l. 3).
2. :func:`run_offline` -- DIVL + QAM on the whole offline buffer (l. 4-9) with the paper's
   n-step rule: 10 chunks for long-horizon tasks, 1 otherwise (App. B2).
3. :func:`run_online` -- rounds of: the sim fleet runs the *deployed* policy with expert
   takeovers (l. 11-28), the episodes join the online buffer, the learner trains on offline and
   online replay mixed ~1:1 with 1-step TD (l. 30-32), and every ``publish_every`` updates
   (default 50, Sec. V-A) the policy is handed to ``on_policy(version, state)`` (export and
   announcement belong to the caller) and becomes the one the fleet runs next round (l. 33-35;
   robots swap policies at episode boundaries, and rounds end at episode boundaries).

The stage that changes the value settings (offline tau_base 0.6 -> online 0.9) does so by using
an agent built from ``LearnerConfig.online(...)``: agents hold no parameters, so the same
TrainState flows from one agent to the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import jax
import numpy as np

from lwd_learner.agent import LWDAgent, TrainState
from lwd_learner.config import LearnerConfig
from lwd_learner.dataset import Normalizer
from lwd_learner.evaluate import EvalResult
from lwd_learner.replay import AGENT_KEYS, MixedSampler, ReplayBuffer, paper_n_step
from lwd_learner.rollout import EpisodeSpec, PolicyFn, RolloutConfig, SimFleet, TakeoverConfig, agent_policy
from lwd_protocol.robot_spec import CONTROL_RATE_HZ

OnPolicy = Callable[[int, Any], None]
# called after every update with the stage's log (updates so far; ``history[-1]`` = newest window means)
OnUpdate = Callable[["StageLog"], None]
EvaluateFn = Callable[[PolicyFn], EvalResult]


@dataclass(frozen=True)
class OnlineLearner:
    """What the online loop needs from a training method, so baselines run the same loop as LWD.

    ``update(state, batch, key) -> (state, metrics)`` is one jitted step on a batch restricted to
    ``batch_keys``; ``policy(state)`` is the deployable policy of a state. Build one with
    :func:`lwd_learner_for` (an :class:`LWDAgent`) or :func:`method_learner` (any method of
    :data:`lwd_learner.baselines.BASELINES`).
    """

    config: LearnerConfig
    update: Callable[[Any, dict, jax.Array], tuple[Any, dict]]
    policy: Callable[[Any], PolicyFn]
    batch_keys: tuple[str, ...] = AGENT_KEYS


def lwd_learner_for(agent: LWDAgent) -> OnlineLearner:
    """The LWD agent's DIVL + QAM update; deploys ``f_theta``."""
    return OnlineLearner(agent.config, agent.update, lambda state: agent_policy(agent, state.policy_params))


def method_learner(method: Any) -> OnlineLearner:
    """A method with ``config``, ``update``, ``sample(state, obs, noise)`` and ``required_keys``."""

    def policy(state: Any) -> PolicyFn:
        return lambda obs, noise: np.asarray(method.sample(state, obs, noise))

    return OnlineLearner(method.config, method.update, policy, tuple(method.required_keys))


@dataclass(frozen=True)
class SFTConfig:
    num_updates: int = 2000
    batch_size: int = 256
    log_every: int = 100


@dataclass(frozen=True)
class OfflineConfig:
    num_updates: int = 1500
    batch_size: int = 256
    n_step_long: int = 10  # chunks per TD window on long-horizon tasks (paper App. B2)
    n_step_short: int = 1  # on grocery tasks
    log_every: int = 100


@dataclass(frozen=True)
class OnlineConfig:
    """Online rounds. ``episodes_per_round`` are spread round-robin over the fleet's tasks."""

    num_rounds: int = 10
    episodes_per_round: int = 8
    updates_per_round: int = 150
    batch_size: int = 256
    online_fraction: float = 0.5  # ~1:1 offline:online (App. B2)
    publish_every: int = 50  # Sec. V-A: broadcast every 50 training steps
    n_step: int = 1  # online TD is 1-step for all tasks (Sec. IV-C)
    takeover: TakeoverConfig | None = field(default_factory=TakeoverConfig)
    execute_steps: int | None = None  # the fleet's sampler: chunk ticks executed before replanning (None = H)
    noise_scale: float = 1.0  # and the flow's initial noise scale (rollout.RolloutConfig)
    seed_base: int = 500_000  # env seeds of online episodes: seed_base + running episode count
    first_version: int = 1  # version published when the stage starts (the offline policy)
    eval_every_rounds: int = 0  # >0: call evaluate_fn after every k-th round (improvement curve)
    log_every: int = 50


@dataclass
class StageLog:
    """What a training stage did: update counts and rates, and metric means per logging window."""

    name: str
    updates: int = 0
    seconds: float = 0.0
    compile_s: float = 0.0  # first update, including jit compilation
    updates_per_s: float = float("nan")  # after the first update
    history: list[dict[str, float]] = field(default_factory=list)

    def mean(self, metric: str) -> float:
        """Mean of a metric over the whole stage (weighted by window length)."""
        rows = [(h[metric], h["window"]) for h in self.history if metric in h]
        if not rows:
            return float("nan")
        values, weights = np.array(rows).T
        return float(np.average(values, weights=weights))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class OnlineRound:
    """One online round: what the fleet collected and how long rollout and training took."""

    round: int
    policy_version: int
    episodes: int
    successes: int
    mean_score: float
    takeovers: int
    intervention_steps: int
    env_steps: int
    online_episodes_total: int
    robot_hours_total: float
    rollout_s: float
    train_s: float
    published: list[int] = field(default_factory=list)


@dataclass
class OnlineLog(StageLog):
    rounds: list[OnlineRound] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)  # every published version, in order
    curve: list[dict[str, Any]] = field(default_factory=list)  # evaluations during the stage


def numpy_rng(key: jax.Array) -> np.random.Generator:
    """A numpy generator derived from a JAX key (replay sampling and flow noise on the host)."""
    data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return np.random.default_rng(np.asarray(data).astype(np.uint64).ravel().tolist())


class _Trainer:
    """Runs update steps, times them (first update = compile) and averages metrics per window."""

    def __init__(
        self,
        log: StageLog,
        log_every: int,
        batch_keys: tuple[str, ...] = AGENT_KEYS,
        on_update: OnUpdate | None = None,
    ) -> None:
        self.log = log
        self.batch_keys = batch_keys
        self.on_update = on_update
        self.log_every = max(1, log_every)
        self._pending: list[dict[str, jax.Array]] = []
        self._steady_s = 0.0
        self._steady_n = 0

    def step(
        self, update: Callable, state: TrainState, sample: Callable[[], dict[str, np.ndarray]], key: jax.Array
    ) -> TrainState:
        """One update on ``sample()``; the timing covers replay sampling and the update itself."""
        start = time.perf_counter()
        batch = sample()
        state, metrics = update(state, {k: batch[k] for k in self.batch_keys}, key)
        if self.log.updates == 0:
            jax.block_until_ready(metrics)
            self.log.compile_s = time.perf_counter() - start
        else:
            self._steady_n += 1
        self.log.updates += 1
        self._pending.append(metrics)
        if len(self._pending) >= self.log_every:
            self.flush()
        elapsed = time.perf_counter() - start
        self.log.seconds += elapsed
        if self.log.updates > 1:
            self._steady_s += elapsed
        if self.on_update is not None:
            self.on_update(self.log)
        return state

    def flush(self) -> None:
        if not self._pending:
            return
        host = jax.device_get(self._pending)
        row = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        row["step"] = self.log.updates
        row["window"] = len(host)
        self.log.history.append(row)
        self._pending = []
        if self._steady_n:
            self.log.updates_per_s = self._steady_n / max(self._steady_s, 1e-9)


def _check_buffer(cfg: LearnerConfig, buffer: ReplayBuffer) -> None:
    if buffer.obs_dim != cfg.network.obs_dim:
        raise ValueError(f"replay obs_dim {buffer.obs_dim} differs from the network's {cfg.network.obs_dim}")
    if buffer.horizon != cfg.network.horizon:
        raise ValueError(f"replay horizon {buffer.horizon} differs from the network's {cfg.network.horizon}")
    if buffer.normalizer.action_dim != cfg.network.action_dim:
        raise ValueError(
            f"replay action dim {buffer.normalizer.action_dim} differs from the network's {cfg.network.action_dim}"
        )
    if buffer.gamma != cfg.value.gamma:
        raise ValueError(f"replay gamma {buffer.gamma} differs from the value config's {cfg.value.gamma}")


def _run_stage(
    name: str,
    update: Callable,
    state: TrainState,
    buffer: ReplayBuffer,
    config: SFTConfig | OfflineConfig,
    key: jax.Array,
    on_update: OnUpdate | None = None,
) -> tuple[TrainState, StageLog]:
    """``config.num_updates`` steps of ``update`` on uniform batches of ``buffer``, timed and logged."""
    log = StageLog(name)
    trainer = _Trainer(log, config.log_every, on_update=on_update)
    k_rng, k_steps = jax.random.split(key)
    rng = numpy_rng(k_rng)
    for k in jax.random.split(k_steps, config.num_updates):
        state = trainer.step(update, state, lambda: buffer.sample(rng, config.batch_size), k)
    trainer.flush()
    return state, log


def run_sft(
    agent: LWDAgent,
    state: TrainState,
    demos: ReplayBuffer,
    config: SFTConfig,
    key: jax.Array,
    on_update: OnUpdate | None = None,
) -> tuple[TrainState, StageLog]:
    """Flow-matching BC of ``reference_params`` on the demonstration buffer."""
    _check_buffer(agent.config, demos)
    return _run_stage("sft", agent.sft_update, state, demos, config, key, on_update)


def run_offline(
    agent: LWDAgent,
    state: TrainState,
    buffer: ReplayBuffer,
    config: OfflineConfig,
    key: jax.Array,
    on_update: OnUpdate | None = None,
) -> tuple[TrainState, StageLog]:
    """DIVL + QAM on the offline buffer (sets the buffer's n-step rule to the paper's offline one)."""
    _check_buffer(agent.config, buffer)
    buffer.set_n_step(paper_n_step(config.n_step_long, config.n_step_short))
    return _run_stage("offline", agent.update, state, buffer, config, key, on_update)


def run_extraction(
    agent: LWDAgent,
    state: TrainState,
    critic_params: Any,
    buffer: ReplayBuffer,
    config: OfflineConfig,
    key: jax.Array,
) -> tuple[TrainState, StageLog]:
    """QAM alone against a fixed critic (:meth:`LWDAgent.extract_update`) on the buffer's states: the
    offline stage's policy extraction with the value learning taken out, for critics learned elsewhere."""
    _check_buffer(agent.config, buffer)

    def update(s: TrainState, batch: dict, k: jax.Array):
        return agent.extract_update(s, critic_params, batch, k)

    return _run_stage("extraction", update, state, buffer, config, key)


def online_specs(tasks: tuple[str, ...], count: int, first_seed: int) -> list[EpisodeSpec]:
    """``count`` episodes spread round-robin over ``tasks`` with consecutive env seeds."""
    return [EpisodeSpec(tasks[i % len(tasks)], first_seed + i) for i in range(count)]


def run_online(
    learner: OnlineLearner | LWDAgent,
    state: Any,
    offline: ReplayBuffer,
    online: ReplayBuffer,
    fleet: SimFleet,
    config: OnlineConfig,
    key: jax.Array,
    on_policy: OnPolicy | None = None,
    evaluate_fn: EvaluateFn | None = None,
) -> tuple[TrainState, OnlineLog]:
    """Online rounds on the sim fleet (module docstring); both buffers are switched to ``config.n_step``.

    ``learner`` is an :class:`LWDAgent` or any :class:`OnlineLearner`; ``offline`` is the replay
    mixed in (the whole offline buffer for LWD, the demonstrations for HG-DAgger / RECAP).
    """
    if isinstance(learner, LWDAgent):
        learner = lwd_learner_for(learner)
    _check_buffer(learner.config, offline)
    _check_buffer(learner.config, online)
    if config.publish_every < 1:
        raise ValueError(f"publish_every must be >= 1, got {config.publish_every}")
    normalizer: Normalizer = online.normalizer
    offline.set_n_step(config.n_step)
    online.set_n_step(config.n_step)
    sampler = MixedSampler(offline, online, config.online_fraction)
    log = OnlineLog("online")
    trainer = _Trainer(log, config.log_every, learner.batch_keys)
    k_rng, k_noise, k_steps = jax.random.split(key, 3)
    rng, noise_rng = numpy_rng(k_rng), numpy_rng(k_noise)
    step_keys = jax.random.split(k_steps, max(1, config.num_rounds * config.updates_per_round))
    rollout_cfg = RolloutConfig(
        takeover=config.takeover, execute_steps=config.execute_steps, noise_scale=config.noise_scale
    )
    horizon = learner.config.network.horizon

    version = config.first_version
    deployed = learner.policy(state)
    log.versions.append(version)
    if on_policy is not None:
        on_policy(version, state)
    episodes_total, steps_total = 0, 0
    for r in range(config.num_rounds):
        t0 = time.perf_counter()
        specs = online_specs(fleet.tasks, config.episodes_per_round, config.seed_base + episodes_total)
        results, stats = fleet.run(deployed, normalizer, specs, noise_rng, rollout_cfg, horizon, policy_version=version)
        online.add_episodes([res.episode for res in results])
        episodes_total += len(results)
        steps_total += stats.env_steps
        rollout_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        published: list[int] = []
        for i in range(config.updates_per_round):
            state = trainer.step(
                learner.update,
                state,
                lambda: sampler.sample(rng, config.batch_size),
                step_keys[r * config.updates_per_round + i],
            )
            if log.updates % config.publish_every == 0:
                version += 1
                deployed = learner.policy(state)  # the fleet picks it up at its next episode boundary
                published.append(version)
                log.versions.append(version)
                if on_policy is not None:
                    on_policy(version, state)
        trainer.flush()
        log.rounds.append(
            OnlineRound(
                round=r,
                policy_version=results[0].episode.policy_version if results else version,
                episodes=len(results),
                successes=sum(res.success for res in results),
                mean_score=float(np.mean([res.score for res in results])) if results else float("nan"),
                takeovers=sum(res.num_takeovers for res in results),
                intervention_steps=sum(res.intervention_steps for res in results),
                env_steps=stats.env_steps,
                online_episodes_total=episodes_total,
                robot_hours_total=steps_total / CONTROL_RATE_HZ / 3600.0,
                rollout_s=rollout_s,
                train_s=time.perf_counter() - t1,
                published=published,
            )
        )
        if evaluate_fn is not None and config.eval_every_rounds > 0 and (r + 1) % config.eval_every_rounds == 0:
            result = evaluate_fn(learner.policy(state))
            log.curve.append(
                {
                    "round": r,
                    "updates": log.updates,
                    "online_episodes": episodes_total,
                    "robot_hours": steps_total / CONTROL_RATE_HZ / 3600.0,
                    **{k: v for k, v in result.to_dict().items() if k != "per_task"},
                    "per_task": {t: e.value for t, e in result.per_task.items()},
                }
            )
    return state, log


@dataclass(frozen=True)
class PipelineConfig:
    sft: SFTConfig = SFTConfig()
    offline: OfflineConfig = OfflineConfig()
    online: OnlineConfig = OnlineConfig()


def run_pipeline(
    offline_agent: LWDAgent,
    online_agent: LWDAgent,
    demos: ReplayBuffer,
    offline: ReplayBuffer,
    online: ReplayBuffer,
    fleet: SimFleet,
    config: PipelineConfig,
    key: jax.Array,
    on_policy: OnPolicy | None = None,
    evaluate_fn: EvaluateFn | None = None,
) -> tuple[TrainState, dict[str, StageLog]]:
    """Alg. 1 end to end: init, SFT, freeze the reference, offline RL, online rounds."""
    k_init, k_sft, k_off, k_on = jax.random.split(key, 4)
    state = offline_agent.init(k_init)
    state, sft_log = run_sft(offline_agent, state, demos, config.sft, k_sft)
    state = offline_agent.start_rl(state)
    state, off_log = run_offline(offline_agent, state, offline, config.offline, k_off)
    state, on_log = run_online(online_agent, state, offline, online, fleet, config.online, k_on, on_policy, evaluate_fn)
    return state, {"sft": sft_log, "offline": off_log, "online": on_log}
