"""Episodes -> chunked transitions for the learner, and the observation/action normalisation.

One :class:`EpisodeArrays` holds one episode as plain arrays, whether it was decoded from an
MCAP file (:func:`from_episode` on :func:`lwd_protocol.episode_io.read_episode` output) or
recorded in memory by :mod:`lwd_learner.rollout`. :func:`episode_transitions` turns it into
chunk-level transitions (paper Sec. III-A, eq. 2 and eq. 19):

- ``s_t``: the low-dim state recorded *before* action ``t`` (row ``t``).
- ``a_{t:t+H}``: the executed action chunk. A chunk running past the episode's last action is
  padded with the last action (the robot holds its final target) and marked in ``action_valid``.
- chunk reward ``r_t = sum_{j<H} gamma^j r_{t+j}`` with the sparse step reward ``r = 1`` only on
  the last step of an episode whose outcome is SUCCESS (paper Alg. 1 line 22).
- n-step window: chunks ``t, t+H, ..., t+(n-1)H`` combined as :func:`lwd_learner.divl.nstep_returns` does
  into ``reward = sum_{i<k} gamma^{iH} r_{t+iH}`` and ``discount = gamma^{kH}``, bootstrap state
  ``s_{t+kH}``; ``discount = 0`` (no bootstrap) when a terminal lies inside the window.

Terminal versus truncated (our decisions, following the paper where it speaks):

- SUCCESS and FAILURE outcomes are *terminals*: the chunk that contains the last step ends the
  window and gets no bootstrap term (paper Sec. IV-C: "truncate the return at the terminal chunk
  and remove the bootstrap term"). Play episodes carry the label FAILURE, so they are terminal
  with reward 0 whatever the sim judged.
- TIMEOUT, ABORTED, UNKNOWN (and partial files) are *truncations*: the time limit is not part of
  the task's state, so bootstrapping *is* allowed -- but only from a state that was recorded. An
  MCAP file records ``s_t`` before every action and not the state after the last one, so the last
  ``H`` steps of a truncated file cannot start a transition (their ``s_{t+H}`` is unknown) and a
  window whose later chunk runs past the recording is cut there and bootstraps from the last
  chunk boundary it reached. In-memory rollouts know the state after the last action
  (``final_state``), which buys one more chunk boundary.
- Which starts exist: every ``stride``-th step whose own chunk is usable, i.e. it either contains
  the terminal step or ends at a recorded state. Terminal episodes therefore yield a transition
  from *every* step (short padded chunks at the end), truncated ones stop ``H`` steps early.

Intervention flags: ``human`` is true when any step of the chunk was chosen by a person
(ActionSource.HUMAN) -- demonstrations and play are human throughout. ``intervention`` is true
when a person acted in an episode that a policy also drove (a takeover), the segments HG-DAgger
and RECAP treat specially.

Observation vector (the policy tensor contract of :mod:`lwd_protocol.policy_io`): the low-dim
state normalised per dimension, then the task one-hot in the order of ``Normalizer.tasks``;
action chunks are encoded by :class:`ActionEncoding` (arm joints relative to the measured joint
positions, statistics per chunk step and joint). :meth:`Normalizer.to_manifest` gives the exported
``lwd_protocol.manifest.Normalization`` so a robot reproduces the learner's inputs exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lwd_protocol.episode import ActionSource, EpisodeSource, Outcome
from lwd_protocol.episode_io import Episode, read_episode
from lwd_protocol.manifest import ActionSpec, Normalization, ObservationSpec
from lwd_protocol.policy_io import STATE_SOURCES, joint_position_index, relative_action_spec
from lwd_protocol.robot_spec import ARM_JOINT_DIMS, CHUNK_HORIZON
from lwd_protocol.tasks import TASK_NAMES, task_info

TERMINAL_OUTCOMES = (Outcome.SUCCESS, Outcome.FAILURE)
SOURCES: tuple[EpisodeSource, ...] = tuple(EpisodeSource)  # integer codes stored in replay


class DatasetError(ValueError):
    """Episode data that cannot become transitions; the message says which episode and why."""


@dataclass(frozen=True, eq=False)
class EpisodeArrays:
    """One episode as arrays, aligned by control step (row ``t`` = tick ``t``).

    Attributes:
        task: task name (``lwd_protocol.tasks.TASK_NAMES``).
        states: ``(T, S)`` low-dim state observed before action ``t`` (sim_state or joints).
        actions: ``(T, A)`` executed joint targets.
        action_source: ``(T,)`` :class:`lwd_protocol.episode.ActionSource` codes.
        outcome: how the episode ended; decides terminal vs truncated (module docstring).
        source: where the episode came from (demo / rollout / play / online).
        final_state: ``(S,)`` state after the last action when known (in-memory rollouts).
        subtask_index: ``(T,)`` subtasks done before step ``t`` (sim only), for plots.
        subtasks_done, num_subtasks: progress at the end, for the step-wise score.
        policy_version: version of the policy that drove the episode (0 = none/expert).
        episode_id: identifier for messages and bookkeeping.
    """

    task: str
    states: np.ndarray
    actions: np.ndarray
    action_source: np.ndarray
    outcome: Outcome
    source: EpisodeSource
    final_state: np.ndarray | None = None
    subtask_index: np.ndarray | None = None
    subtasks_done: int = 0
    num_subtasks: int = 0
    policy_version: int = 0
    episode_id: str = ""

    def __post_init__(self) -> None:
        name = self.episode_id or "<in-memory episode>"
        task_info(self.task)  # KeyError naming the known tasks
        object.__setattr__(self, "outcome", Outcome(self.outcome))
        object.__setattr__(self, "source", EpisodeSource(self.source))
        states = np.asarray(self.states, np.float32)
        actions = np.asarray(self.actions, np.float32)
        sources = np.asarray(self.action_source, np.uint8)
        if states.ndim != 2 or actions.ndim != 2 or sources.ndim != 1:
            raise DatasetError(f"{name}: states/actions must be 2-D and action_source 1-D")
        T = actions.shape[0]
        if T < 1:
            raise DatasetError(f"{name}: episode has no steps")
        if states.shape[0] != T or sources.shape[0] != T:
            raise DatasetError(
                f"{name}: {states.shape[0]} states, {T} actions, {sources.shape[0]} action sources; all must match"
            )
        if not (np.all(np.isfinite(states)) and np.all(np.isfinite(actions))):
            raise DatasetError(f"{name}: states or actions contain NaN/inf")
        if sources.size and int(sources.max()) > max(ActionSource):
            raise DatasetError(f"{name}: unknown action source code {int(sources.max())}")
        object.__setattr__(self, "states", states)
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "action_source", sources)
        if self.final_state is not None:
            final = np.asarray(self.final_state, np.float32).reshape(-1)
            if final.shape != (states.shape[1],) or not np.all(np.isfinite(final)):
                raise DatasetError(f"{name}: final_state must be {states.shape[1]} finite values")
            object.__setattr__(self, "final_state", final)
        if self.subtask_index is not None:
            sub = np.asarray(self.subtask_index, np.int16)
            if sub.shape != (T,):
                raise DatasetError(f"{name}: subtask_index has shape {sub.shape}, expected ({T},)")
            object.__setattr__(self, "subtask_index", sub)

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])

    @property
    def success(self) -> bool:
        return self.outcome is Outcome.SUCCESS

    @property
    def terminal(self) -> bool:
        """True when the episode ended in a terminal state (success or failure): no bootstrap past it."""
        return self.outcome in TERMINAL_OUTCOMES

    @property
    def score(self) -> float:
        """Step-wise score (fraction of subtasks done) or binary success without subtask counts."""
        if self.num_subtasks > 0:
            return self.subtasks_done / self.num_subtasks
        return float(self.success)

    @property
    def num_intervention_steps(self) -> int:
        return int(np.sum(intervention_steps(self)))


def intervention_steps(ep: EpisodeArrays) -> np.ndarray:
    """``(T,)`` bool: a person acted at this step of an episode that a policy also drove."""
    human = ep.action_source == ActionSource.HUMAN
    policy_driven = bool(np.any(ep.action_source == ActionSource.POLICY))
    return human & policy_driven


def from_episode(episode: Episode, state_source: str = "sim_state") -> EpisodeArrays:
    """Convert a decoded MCAP episode; ``state_source`` picks ``sim_state`` or ``joint_positions``.

    A partial episode (no end record) has outcome UNKNOWN and is treated as truncated.
    """
    eid = episode.start.episode_id
    if state_source not in STATE_SOURCES:
        raise DatasetError(f"{eid}: state_source {state_source!r} is not one of {STATE_SOURCES}")
    if state_source == "sim_state":
        if episode.sim_state is None:
            raise DatasetError(f"{eid}: state_source 'sim_state' but the episode has no /observation/sim_state")
        states = episode.sim_state
    else:
        states = episode.joint_position
    end = episode.end
    versions = episode.policy_version
    return EpisodeArrays(
        task=episode.start.task,
        states=states,
        actions=episode.action,
        action_source=episode.action_source,
        outcome=end.outcome if end is not None else Outcome.UNKNOWN,
        source=episode.start.source,
        subtask_index=episode.subtask_index,
        subtasks_done=end.subtasks_done if end is not None else 0,
        num_subtasks=end.num_subtasks if end is not None else 0,
        policy_version=int(versions.max()) if versions.size else episode.start.policy_version,
        episode_id=eid,
    )


def load_episodes(paths: Iterable[str | Path], state_source: str = "sim_state") -> list[EpisodeArrays]:
    """Read MCAP episode files (without images) into :class:`EpisodeArrays`, in the given order."""
    return [from_episode(read_episode(p, load_images=False), state_source) for p in paths]


# ----------------------------------------------------------------------------- transitions


@dataclass(frozen=True, eq=False)
class Transitions:
    """Chunk-level transitions of one episode; every array has one row per start step.

    ``start`` and ``bootstrap`` index the episode's states, where index ``T`` means
    ``final_state``. ``reward``/``discount``/``k`` follow :func:`lwd_learner.divl.nstep_returns`;
    ``terminal`` is true when the window ended at a terminal (``discount == 0``).
    ``return_to_go`` is the per-step discounted Monte-Carlo return from ``s_t`` (0 for episodes
    that did not succeed, including truncated ones: nothing after the recording is assumed).
    """

    start: np.ndarray  # (N,) int64
    bootstrap: np.ndarray  # (N,) int64
    reward: np.ndarray  # (N,) float32
    discount: np.ndarray  # (N,) float32
    k: np.ndarray  # (N,) int32 chunks summed, in [1, n]
    terminal: np.ndarray  # (N,) bool
    human: np.ndarray  # (N,) bool any HUMAN step in the chunk
    intervention: np.ndarray  # (N,) bool a takeover step in the chunk
    padded: np.ndarray  # (N,) bool the chunk runs past the last action
    return_to_go: np.ndarray  # (N,) float32 Monte-Carlo return sum_{j>=t} gamma^(j-t) r_j (RECAP's value target)

    def __len__(self) -> int:
        return int(self.start.shape[0])


def step_rewards(ep: EpisodeArrays) -> np.ndarray:
    """``(T,)`` sparse reward: 1 on the last step of a successful episode, else 0."""
    r = np.zeros(ep.length, np.float64)
    if ep.success:
        r[-1] = 1.0
    return r


def chunk_table(ep: EpisodeArrays, horizon: int, gamma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step chunk quantities ``(reward, terminal, valid)``, each ``(T,)``, for a chunk starting at ``c``.

    ``reward[c] = sum_{j<H, c+j<T} gamma^j r_{c+j}`` (eq. 2); ``terminal[c]``: the chunk contains
    the terminal step; ``valid[c]``: the chunk can be a transition (terminal, or its end state
    ``s_{c+H}`` was recorded).
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    T = ep.length
    r = step_rewards(ep)
    reward = np.zeros(T, np.float64)
    for j in range(min(horizon, T)):
        reward[: T - j] += gamma**j * r[j:]
    c = np.arange(T)
    terminal = np.zeros(T, bool)
    if ep.terminal:
        terminal = c + horizon >= T
    last_state = T if ep.final_state is not None else T - 1
    valid = terminal | (c + horizon <= last_state)
    return reward, terminal, valid


def episode_transitions(ep: EpisodeArrays, horizon: int, gamma: float, n_step: int, stride: int = 1) -> Transitions:
    """All n-step chunk transitions of one episode (module docstring for the rules)."""
    if n_step < 1 or stride < 1:
        raise ValueError(f"n_step and stride must be >= 1, got n_step={n_step} stride={stride}")
    T = ep.length
    chunk_reward, chunk_terminal, chunk_valid = chunk_table(ep, horizon, gamma)
    starts = np.arange(0, T, stride)
    starts = starts[chunk_valid[starts]]
    positions = starts[:, None] + horizon * np.arange(n_step)[None, :]  # (N, n)
    inside = positions < T
    safe = np.minimum(positions, T - 1)
    rewards = np.where(inside, chunk_reward[safe], 0.0)
    terminals = inside & chunk_terminal[safe]
    valid = inside & chunk_valid[safe]
    reward, discount, k = nstep_returns_np(rewards, terminals, valid, gamma**horizon)
    terminal = discount == 0.0
    last_state = T if ep.final_state is not None else T - 1
    bootstrap = np.where(terminal, starts, np.minimum(starts + k * horizon, last_state))
    human_step = (ep.action_source == ActionSource.HUMAN).astype(np.int64)
    takeover_step = intervention_steps(ep).astype(np.int64)
    ends = np.minimum(starts + horizon, T)
    return Transitions(
        start=starts.astype(np.int64),
        bootstrap=bootstrap.astype(np.int64),
        reward=reward.astype(np.float32),
        discount=discount.astype(np.float32),
        k=k.astype(np.int32),
        terminal=terminal,
        human=_window_any(human_step, starts, ends),
        intervention=_window_any(takeover_step, starts, ends),
        padded=starts + horizon > T,
        return_to_go=(gamma ** (T - 1 - starts) * float(ep.success)).astype(np.float32),
    )


def _window_any(flags: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    csum = np.concatenate([[0], np.cumsum(flags)])
    return (csum[ends] - csum[starts]) > 0


def nstep_returns_np(
    rewards: np.ndarray, terminals: np.ndarray, valid: np.ndarray, gamma_chunk: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy twin of :func:`lwd_learner.divl.nstep_returns` (same rules, same outputs).

    The replay builds transition tables on the host for every episode it ingests; eager JAX
    would compile every new ``(rows, n)`` shape, so the table uses this copy, and the tests
    check it against the JAX function.
    """
    n = rewards.shape[-1]
    valid = valid.astype(bool)
    terminals = terminals.astype(bool) & valid
    term_int = terminals.astype(np.int64)
    ended_before = np.cumsum(term_int, axis=-1) - term_int
    used = (np.cumprod(valid.astype(np.int64), axis=-1) > 0) & (ended_before == 0)
    powers = gamma_chunk ** np.arange(n, dtype=np.float64)
    reward = np.sum(np.where(used, rewards * powers, 0.0), axis=-1)
    steps = np.sum(used, axis=-1).astype(np.int32)
    hit_terminal = np.any(used & terminals, axis=-1)
    discount = np.where(hit_terminal, 0.0, gamma_chunk ** steps.astype(np.float64))
    return reward.astype(np.float32), discount.astype(np.float32), steps


def chunk_actions(actions: np.ndarray, starts: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """``(N, H, A)`` chunks ``a_{t:t+H}`` padded with the last action, and the ``(N, H)`` valid mask."""
    T = actions.shape[0]
    idx = np.asarray(starts)[:, None] + np.arange(horizon)[None, :]
    return actions[np.minimum(idx, T - 1)], idx < T


# ----------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class ActionEncoding:
    """How action chunks are represented for the policy (the manifest's action spec follows it).

    ``relative_dims``: action dims predicted as offsets from the measured joint position at the
    chunk's first tick (default: the 14 arm joints; grippers stay absolute), as openpi's delta
    actions do. ``per_step``: normalise each (chunk step, joint) with its own statistics, since
    an offset's spread grows with the step. Measured on fruit-juice demos (224 episodes, same
    network and 6000 updates): first-tick arm error p90 0.12 rad absolute, 0.08 relative, 0.03
    relative + per step.
    """

    relative_dims: tuple[int, ...] = ARM_JOINT_DIMS
    per_step: bool = True

    @classmethod
    def absolute(cls) -> ActionEncoding:
        """Absolute targets normalised per joint (format-1 artifacts)."""
        return cls(relative_dims=(), per_step=False)


@dataclass(frozen=True, eq=False)
class Normalizer:
    """Per-dimension state normalisation, the action-chunk encoding, and the task one-hot layout.

    ``obs = concat((state - state_mean) / state_std, one_hot(task, tasks))``. A policy chunk in
    normalised units ``y (H, A)`` decodes to joint targets ``y * action_std + action_mean`` plus,
    on ``relative_dims``, the measured joint positions (the raw state at
    :meth:`anchor_index`) of the state the chunk was computed from. ``action_mean/std`` are
    ``(A,)`` (per joint) or ``(H, A)`` (per chunk step and joint).
    """

    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray
    tasks: tuple[str, ...] = TASK_NAMES
    state_source: str = "sim_state"
    relative_dims: tuple[int, ...] = ()
    _task_index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("state_mean", "state_std", "action_mean", "action_std"):
            value = np.asarray(getattr(self, name), np.float64)
            value = value.reshape(-1) if name.startswith("state") or value.ndim < 2 else value
            if not np.all(np.isfinite(value)):
                raise DatasetError(f"normaliser {name} contains NaN/inf")
            if name.endswith("std") and not np.all(value > 0):
                raise DatasetError(f"normaliser {name} must be strictly positive")
            object.__setattr__(self, name, value)
        if self.state_mean.shape != self.state_std.shape or self.action_mean.shape != self.action_std.shape:
            raise DatasetError("normaliser mean and std shapes differ")
        if self.action_mean.ndim not in (1, 2):
            raise DatasetError(f"action statistics must be (A,) or (H, A), got shape {self.action_mean.shape}")
        if self.state_source not in STATE_SOURCES:
            raise DatasetError(f"state_source {self.state_source!r} is not one of {STATE_SOURCES}")
        dims = tuple(int(d) for d in self.relative_dims)
        if len(set(dims)) != len(dims) or any(not 0 <= d < self.action_dim for d in dims):
            raise DatasetError(f"relative_dims {dims} must be distinct action dims in [0, {self.action_dim})")
        object.__setattr__(self, "relative_dims", dims)
        if dims and max(self.anchor_index) >= self.state_dim:
            raise DatasetError(f"state of {self.state_dim} values has no joint positions at {self.anchor_index}")
        tasks = tuple(self.tasks)
        if len(set(tasks)) != len(tasks):
            raise DatasetError(f"task list has duplicates: {tasks}")
        for t in tasks:
            task_info(t)
        object.__setattr__(self, "tasks", tasks)
        object.__setattr__(self, "_task_index", {t: i for i, t in enumerate(tasks)})

    @property
    def state_dim(self) -> int:
        return int(self.state_mean.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.action_mean.shape[-1])

    @property
    def horizon(self) -> int | None:
        """The chunk length per-step statistics were computed for; None for per-joint statistics."""
        return int(self.action_mean.shape[0]) if self.action_mean.ndim == 2 else None

    @property
    def obs_dim(self) -> int:
        return self.state_dim + len(self.tasks)

    @property
    def anchor_index(self) -> list[int]:
        """State indices of the measured joint positions that ``relative_dims`` are offsets from."""
        joints = joint_position_index(self.state_source)
        return [joints[d] for d in self.relative_dims]

    def task_id(self, task: str) -> int:
        try:
            return self._task_index[task]
        except KeyError:
            raise DatasetError(f"task {task!r} is not in the policy's task list {self.tasks}") from None

    def obs(self, states: np.ndarray, task: str | Sequence[str] | np.ndarray) -> np.ndarray:
        """``(N, obs_dim)`` float32 observation vectors; ``task`` is one name or ``N`` names / task ids."""
        states = np.asarray(states, np.float64)
        squeeze = states.ndim == 1
        states = np.atleast_2d(states)
        if states.shape[1] != self.state_dim:
            raise DatasetError(f"state has {states.shape[1]} values, normaliser expects {self.state_dim}")
        if isinstance(task, str):
            ids = np.full(states.shape[0], self.task_id(task))
        else:
            task = np.asarray(task)
            ids = np.array([self.task_id(t) for t in task]) if task.dtype.kind in "US" else task.astype(np.int64)
        out = np.zeros((states.shape[0], self.obs_dim), np.float32)
        out[:, : self.state_dim] = (states - self.state_mean) / self.state_std
        out[np.arange(states.shape[0]), self.state_dim + ids] = 1.0
        return out[0] if squeeze else out

    def anchors(self, states: np.ndarray) -> np.ndarray:
        """``(N, len(relative_dims))`` joint positions the relative dims are offsets from, from raw states."""
        return np.atleast_2d(np.asarray(states, np.float64))[:, self.anchor_index]

    def _check_chunks(self, chunks: np.ndarray) -> None:
        if chunks.ndim != 3 or chunks.shape[2] != self.action_dim:
            raise DatasetError(f"action chunks must be (N, H, {self.action_dim}), got {chunks.shape}")
        if self.horizon is not None and chunks.shape[1] != self.horizon:
            raise DatasetError(f"chunks have {chunks.shape[1]} steps; the statistics are for H={self.horizon}")

    def normalize_chunks(self, chunks: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """Joint-target chunks ``(N, H, A)`` -> policy units; ``anchors`` from :meth:`anchors` of each chunk's state."""
        chunks = np.array(chunks, np.float64)
        self._check_chunks(chunks)
        if self.relative_dims:
            chunks[:, :, self.relative_dims] -= np.asarray(anchors, np.float64)[:, None, :]
        return ((chunks - self.action_mean) / self.action_std).astype(np.float32)

    def denormalize_chunks(self, chunks: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize_chunks`: policy units ``(N, H, A)`` -> joint targets."""
        chunks = np.asarray(chunks, np.float64)
        self._check_chunks(chunks)
        out = chunks * self.action_std + self.action_mean
        if self.relative_dims:
            out[:, :, self.relative_dims] += np.asarray(anchors, np.float64)[:, None, :]
        return out

    def to_manifest(self) -> Normalization:
        """The exported artifact's ``normalization`` block (``(H, A)`` statistics flattened row-major)."""
        return Normalization(
            state_mean=[float(x) for x in self.state_mean],
            state_std=[float(x) for x in self.state_std],
            action_mean=[float(x) for x in self.action_mean.reshape(-1)],
            action_std=[float(x) for x in self.action_std.reshape(-1)],
        )

    def observation_spec(self) -> ObservationSpec:
        """The exported artifact's ``observation`` block (low-dim state + task one-hot, no cameras)."""
        return ObservationSpec(state_source=self.state_source, state_dim=self.state_dim, tasks=list(self.tasks))

    def action_spec(self) -> ActionSpec:
        """The exported artifact's ``action`` block: the robot's joints plus this encoding's relative dims."""
        base = ActionSpec(horizon=self.horizon) if self.horizon is not None else None
        return relative_action_spec(self.state_source, list(self.relative_dims), base)

    @classmethod
    def from_manifest(
        cls, normalization: Normalization, observation: ObservationSpec, action: ActionSpec | None = None
    ) -> Normalizer:
        action = action if action is not None else ActionSpec()
        a_mean, a_std = np.asarray(normalization.action_mean), np.asarray(normalization.action_std)
        if a_mean.size == action.horizon * action.dim:
            a_mean, a_std = a_mean.reshape(action.horizon, action.dim), a_std.reshape(action.horizon, action.dim)
        if [joint_position_index(observation.state_source)[d] for d in action.relative_dims] != list(
            action.relative_state_index
        ):
            raise DatasetError("manifest's relative_state_index is not the joint positions of its state source")
        return cls(
            state_mean=np.asarray(normalization.state_mean),
            state_std=np.asarray(normalization.state_std),
            action_mean=a_mean,
            action_std=a_std,
            tasks=tuple(observation.tasks),
            state_source=observation.state_source,
            relative_dims=tuple(action.relative_dims),
        )


def _raise_small(std: np.ndarray, min_std: float) -> np.ndarray:
    return np.where(std < 1e-6, 1.0, np.maximum(std, min_std))


def _chunk_statistics(
    episodes: Sequence[EpisodeArrays],
    horizon: int,
    relative_dims: tuple[int, ...],
    anchor_index: list[int],
    per_step: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean/std per (chunk step, joint), or per joint pooled over steps, of the encoded chunks starting at every step.

    Entries past an episode's end (the padding the replay repeats) are left out; accumulates per
    step so memory stays ``O(H * A)`` whatever the data size.
    """
    dim = episodes[0].actions.shape[1]
    count = np.zeros((horizon, 1))
    total = np.zeros((horizon, dim))
    total_sq = np.zeros((horizon, dim))
    for ep in episodes:
        actions = ep.actions.astype(np.float64)
        anchors = ep.states[:, anchor_index].astype(np.float64)
        for h in range(min(horizon, ep.length)):
            values = actions[h:].copy()
            if relative_dims:
                values[:, relative_dims] -= anchors[: ep.length - h]
            count[h] += values.shape[0]
            total[h] += values.sum(axis=0)
            total_sq[h] += np.square(values).sum(axis=0)
    if not per_step:
        count, total, total_sq = count.sum(axis=0), total.sum(axis=0), total_sq.sum(axis=0)
    mean = total / np.maximum(count, 1)
    std = np.sqrt(np.maximum(total_sq / np.maximum(count, 1) - np.square(mean), 0.0))
    if per_step:  # steps no episode reaches (all shorter than H) reuse the last step that has data
        for h in range(1, horizon):
            if count[h, 0] == 0:
                mean[h], std[h] = mean[h - 1], std[h - 1]
    return mean, std


def compute_normalizer(
    episodes: Sequence[EpisodeArrays],
    tasks: Sequence[str] = TASK_NAMES,
    state_source: str = "sim_state",
    min_std: float = 1e-2,
    horizon: int = CHUNK_HORIZON,
    encoding: ActionEncoding | None = None,
) -> Normalizer:
    """Normalisation statistics over every recorded state and action chunk of ``episodes``.

    A standard deviation below ``min_std`` is raised to ``min_std``, and an (almost) constant
    dimension (std < 1e-6: unused state slots, absent tasks' flags) gets std 1 so it maps to 0
    and a value it never took in the data is not blown up by a tiny divisor. ``tasks`` fixes the
    one-hot order; the default is the whole suite so the observation layout does not change when
    a task is added to or missing from the data. ``encoding`` (default :class:`ActionEncoding`:
    relative arm joints, per-step statistics over chunks of ``horizon``) decides the action side.
    """
    if not episodes:
        raise DatasetError("cannot compute normalisation statistics from zero episodes")
    encoding = encoding if encoding is not None else ActionEncoding()
    missing = sorted({ep.task for ep in episodes} - set(tasks))
    if missing:
        raise DatasetError(f"episodes of task(s) {missing} are not in the task list {tuple(tasks)}")
    states = np.concatenate(
        [ep.states for ep in episodes] + [ep.final_state[None] for ep in episodes if ep.final_state is not None]
    ).astype(np.float64)
    s_std = _raise_small(states.std(axis=0), min_std)
    relative = tuple(encoding.relative_dims)
    anchor_index = [joint_position_index(state_source)[d] for d in relative]
    if relative and max(anchor_index) >= states.shape[1]:
        raise DatasetError(f"{state_source} states of {states.shape[1]} values hold no joint positions to anchor on")
    # Absolute per-joint statistics only need the first chunk step (every action once).
    steps = horizon if relative or encoding.per_step else 1
    a_mean, a_std = _chunk_statistics(episodes, steps, relative, anchor_index, encoding.per_step)
    return Normalizer(
        states.mean(axis=0), s_std, a_mean, _raise_small(a_std, min_std), tuple(tasks), state_source, relative
    )
