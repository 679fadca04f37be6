"""In-process sim fleet: run a chunked flow policy in lwd_sim envs, with optional expert takeovers.

This is the learner-side stand-in for the robot fleet of the paper's online stage (Alg. 1
lines 11-28) when everything runs on one machine: a :class:`SimFleet` holds one or more
:class:`lwd_sim.LwdSimEnv` per task and steps them in lockstep, so every policy query is one
batched call. Execution is chunked like the robot controller: the policy returns an ``(H, A)``
chunk (normalised units) that is executed open-loop for ``execute_steps`` ticks (default ``H``)
before the next query. Observations follow the policy tensor contract via
:class:`lwd_learner.dataset.Normalizer` (normalised low-dim state + task one-hot).

Takeovers (the simulated teleoperator of Alg. 1 lines 17-19): when a :class:`TakeoverConfig` is
given, the task's :class:`lwd_sim.ScriptedExpert` takes control after the policy has made no
subtask progress for ``stall_steps`` ticks, acts until the next subtask completes (or for at most
``max_takeover_steps``), then hands control back to the policy. Its actions are recorded as
``ActionSource.HUMAN`` -- exactly how a robot records a teleoperator -- so the replay marks those
chunks as interventions. (A look-ahead "failure is imminent" trigger would need to clone the
sim and the task's event state; the stall rule covers the paper's "when a rollout requires
correction" without it.)

Every finished episode comes back as :class:`lwd_learner.dataset.EpisodeArrays` (source ONLINE,
with the state after the last action as ``final_state``), ready for
:meth:`lwd_learner.replay.ReplayBuffer.add_episode`.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lwd_learner.dataset import EpisodeArrays, Normalizer
from lwd_protocol.episode import ActionSource, EpisodeSource, Outcome

# (obs (B, obs_dim) float32, noise (B, H, A) float32) -> (B, H, A) chunks in normalised action units.
PolicyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def agent_policy(agent: Any, policy_params: Any) -> PolicyFn:
    """Wrap :meth:`lwd_learner.agent.LWDAgent.sample_actions` (jitted) with fixed parameters.

    Pass ``state.policy_params`` for ``f_theta`` or ``state.reference_params`` for the SFT policy.
    """
    import jax.numpy as jnp

    def policy(obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return np.asarray(agent.sample_actions(policy_params, jnp.asarray(obs), jnp.asarray(noise)))

    return policy


@dataclass(frozen=True)
class TakeoverConfig:
    """When the scripted expert takes over from the policy, and when it hands back.

    ``stall_steps`` None means ``stall_fraction`` of the task's per-subtask time budget
    (``max_steps / num_subtasks``): a long subtask gets proportionally more patience.
    """

    stall_fraction: float = 0.5
    stall_steps: int | None = None
    max_takeover_steps: int = 300
    max_takeovers: int = 4  # per episode

    def stall_limit(self, max_steps: int, num_subtasks: int) -> int:
        if self.stall_steps is not None:
            return max(1, self.stall_steps)
        return max(1, math.ceil(self.stall_fraction * max_steps / max(1, num_subtasks)))


@dataclass(frozen=True)
class RolloutConfig:
    """How episodes are executed: chunk execution length, time limit, takeovers, provenance."""

    execute_steps: int | None = None  # ticks executed per chunk before replanning (None = H)
    noise_scale: float = 1.0  # the flow starts from noise_scale * N(0, I); 0 = deterministic sampling
    takeover: TakeoverConfig | None = None
    source: EpisodeSource = EpisodeSource.ONLINE


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to run: which task, and the env reset seed (the scene's randomisation)."""

    task: str
    seed: int


@dataclass
class RolloutResult:
    """A finished episode plus the facts evaluation and logs need."""

    spec: EpisodeSpec
    episode: EpisodeArrays
    success: bool
    failed: bool
    score: float
    length: int
    num_takeovers: int
    intervention_steps: int
    failure_reason: str = ""


@dataclass
class FleetStats:
    """Totals of one :meth:`SimFleet.run` call."""

    episodes: int = 0
    env_steps: int = 0
    policy_calls: int = 0
    seconds: float = 0.0
    policy_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "episodes": self.episodes,
            "env_steps": self.env_steps,
            "policy_calls": self.policy_calls,
            "seconds": round(self.seconds, 3),
            "policy_seconds": round(self.policy_seconds, 3),
            "env_steps_per_s": round(self.env_steps / max(self.seconds, 1e-9), 1),
        }


@dataclass
class _Slot:
    """One env of the fleet and the episode it is running."""

    env: Any
    expert: Any
    spec: EpisodeSpec | None = None
    order: int = -1
    obs: dict = field(default_factory=dict)
    queue: deque = field(default_factory=deque)
    states: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    sources: list = field(default_factory=list)
    subtasks: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    human: bool = False
    last_progress: int = 0
    progress_index: int = 0
    takeover_start: int = 0
    takeover_index: int = 0
    takeovers: int = 0


class SimFleet:
    """Envs for ``tasks`` (``envs_per_task`` each), stepped in lockstep in this process.

    Args:
        tasks: task names; each must be implemented by lwd_sim (``lwd_sim.tasks.IMPLEMENTED_TASKS``).
        envs_per_task: parallel envs per task (more = bigger policy batches, more episodes per tick).
        max_steps: episode time limit override (None = each task's own limit).
    """

    def __init__(self, tasks: Sequence[str], envs_per_task: int = 1, max_steps: int | None = None) -> None:
        from lwd_sim import ScriptedExpert, make_env
        from lwd_sim.experts import ExpertConfig

        if not tasks:
            raise ValueError("a fleet needs at least one task")
        if envs_per_task < 1:
            raise ValueError(f"envs_per_task must be >= 1, got {envs_per_task}")
        self.tasks = tuple(dict.fromkeys(tasks))
        self.max_steps = max_steps
        self.slots: dict[str, list[_Slot]] = {}
        for t_i, task in enumerate(self.tasks):
            self.slots[task] = []
            for e in range(envs_per_task):
                env = make_env(task, seed=0, max_steps=max_steps)
                expert = ScriptedExpert(env, ExpertConfig(seed=1000 * t_i + e))
                self.slots[task].append(_Slot(env=env, expert=expert))
        self.size = len(self.tasks) * envs_per_task

    def time_limit(self, task: str) -> int:
        env = self.slots[task][0].env
        return env.config.max_steps or env.task.max_steps

    def close(self) -> None:
        for slots in self.slots.values():
            for slot in slots:
                slot.env.close()

    def run(
        self,
        policy: PolicyFn,
        normalizer: Normalizer,
        specs: Sequence[EpisodeSpec],
        rng: np.random.Generator,
        config: RolloutConfig = RolloutConfig(),
        horizon: int = 30,
        policy_version: int = 0,
    ) -> tuple[list[RolloutResult], FleetStats]:
        """Run every episode in ``specs``; results come back in the order of ``specs``.

        ``rng`` draws the flow noise (one ``(fleet size, H, A)`` block per policy query, so a
        jitted policy sees one batch shape); the env seeds come from the specs.
        """
        for spec in specs:
            if spec.task not in self.slots:
                raise ValueError(f"episode task {spec.task!r} has no env in this fleet (tasks: {self.tasks})")
        execute = config.execute_steps or horizon
        if not 1 <= execute <= horizon:
            raise ValueError(f"execute_steps must be in [1, {horizon}], got {execute}")
        pending = {task: deque() for task in self.slots}
        for order, spec in enumerate(specs):
            pending[spec.task].append((order, spec))
        results: list[RolloutResult | None] = [None] * len(specs)
        stats = FleetStats()
        t0 = time.perf_counter()
        active: list[_Slot] = []
        for task, slots in self.slots.items():
            for slot in slots:
                if self._start(slot, pending[task]):
                    active.append(slot)
        state_key = "sim_state" if normalizer.state_source == "sim_state" else "joint_position"
        while active:
            need = [s for s in active if not s.human and not s.queue]
            if need:
                obs = np.zeros((self.size, normalizer.obs_dim), np.float32)
                states = np.stack([s.obs[state_key] for s in need])
                obs[: len(need)] = normalizer.obs(states, [s.spec.task for s in need])
                noise = rng.standard_normal((self.size, horizon, normalizer.action_dim)).astype(np.float32)
                noise *= np.float32(config.noise_scale)  # drawn even at scale 0: the rng stream stays aligned
                p0 = time.perf_counter()
                chunks = np.asarray(policy(obs, noise))
                stats.policy_seconds += time.perf_counter() - p0
                stats.policy_calls += 1
                if chunks.shape != (self.size, horizon, normalizer.action_dim):
                    raise ValueError(
                        f"policy returned shape {chunks.shape}, expected {(self.size, horizon, normalizer.action_dim)}"
                    )
                targets = normalizer.denormalize_chunks(chunks[: len(need)], normalizer.anchors(states))
                for slot, chunk in zip(need, targets, strict=True):
                    slot.queue.extend(chunk[:execute])
            finished = []
            for slot in active:
                done = self._tick(slot, config.takeover, state_key)
                stats.env_steps += 1
                if done:
                    results[slot.order] = self._finish(slot, config, policy_version, state_key)
                    stats.episodes += 1
                    finished.append(slot)
            for slot in finished:
                if not self._start(slot, pending[slot.spec.task]):
                    active.remove(slot)
        stats.seconds = time.perf_counter() - t0
        return [r for r in results if r is not None], stats

    # ------------------------------------------------------------------ per-env steps

    @staticmethod
    def _start(slot: _Slot, pending: deque) -> bool:
        if not pending:
            slot.spec = None
            return False
        slot.order, slot.spec = pending.popleft()
        slot.obs = slot.env.reset(slot.spec.seed)
        slot.queue.clear()
        slot.states, slot.actions, slot.sources, slot.subtasks = [], [], [], []
        slot.human = False
        slot.last_progress = 0
        slot.progress_index = slot.env.status.subtask_index
        slot.takeovers = 0
        return True

    def _tick(self, slot: _Slot, takeover: TakeoverConfig | None, state_key: str) -> bool:
        """Choose (policy chunk or expert) and execute one action; True when the episode ended."""
        env = slot.env
        t = env.steps
        index = env.status.subtask_index
        if takeover is not None and not slot.human and slot.takeovers < takeover.max_takeovers:
            stall = takeover.stall_limit(self.time_limit(slot.spec.task), env.task.num_subtasks)
            if t - slot.last_progress >= stall:
                slot.human = True
                slot.takeovers += 1
                slot.takeover_start, slot.takeover_index = t, index
                slot.queue.clear()
                slot.expert.memory = {}  # skills are reactive; start the takeover from a clean phase
        if slot.human:
            action, source = slot.expert.act(), ActionSource.HUMAN
        else:
            action, source = slot.queue.popleft(), ActionSource.POLICY
        slot.states.append(np.asarray(slot.obs[state_key], np.float32))
        slot.subtasks.append(index)
        obs, _, terminated, truncated, info = env.step(action)
        slot.actions.append(np.asarray(env.last_action, np.float32))  # what the sim applied (clamped)
        slot.sources.append(int(source))
        new_index = env.status.subtask_index
        if new_index > slot.progress_index:
            slot.progress_index, slot.last_progress = new_index, env.steps
        if slot.human and takeover is not None:
            progressed = new_index > slot.takeover_index
            if progressed or env.steps - slot.takeover_start >= takeover.max_takeover_steps:
                slot.human = False
                slot.last_progress = env.steps  # the policy gets a full stall window after a handback
        slot.obs, slot.info = obs, info
        return bool(terminated or truncated)

    def _finish(self, slot: _Slot, config: RolloutConfig, policy_version: int, state_key: str) -> RolloutResult:
        info = slot.info
        env, spec = slot.env, slot.spec
        if info["success"]:
            outcome = Outcome.SUCCESS
        elif info["failed"]:
            outcome = Outcome.FAILURE
        else:
            outcome = Outcome.TIMEOUT
        episode = EpisodeArrays(
            task=spec.task,
            states=np.stack(slot.states),
            actions=np.stack(slot.actions),
            action_source=np.asarray(slot.sources, np.uint8),
            outcome=outcome,
            source=config.source,
            final_state=np.asarray(slot.obs[state_key], np.float32),
            subtask_index=np.asarray(slot.subtasks, np.int16),
            subtasks_done=int(info["subtask_index"]),
            num_subtasks=int(env.task.num_subtasks),
            policy_version=policy_version,
            # unique per executed episode, as a robot's are: the replay skips a known id, so a spec run
            # twice (repeated scenes, branching from one state) must not collapse into one episode
            episode_id=f"sim-{spec.task}-seed{spec.seed}-v{policy_version}-{uuid.uuid4().hex[:8]}",
        )
        human = episode.action_source == ActionSource.HUMAN
        return RolloutResult(
            spec=spec,
            episode=episode,
            success=bool(info["success"]),
            failed=bool(info["failed"]),
            score=float(info["score"]),
            length=episode.length,
            num_takeovers=slot.takeovers,
            intervention_steps=int(human.sum()),
            failure_reason=str(info.get("failure_reason", "")),
        )
