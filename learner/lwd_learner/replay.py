"""Replay: a growable numpy buffer of chunk transitions, a batch sampler and the 1:1 mixed sampler.

The buffer stores each episode once -- normalised observations (states plus the task one-hot,
:class:`lwd_learner.dataset.Normalizer`) and normalised actions -- and a table of transitions
that index into that storage (:func:`lwd_learner.dataset.episode_transitions`). A sampled
batch gathers ``obs``, the ``(H, A)`` chunk (padded past the episode end with the last action),
``next_obs`` and the n-step ``reward``/``discount``: exactly the agent's Batch format
(:mod:`lwd_learner.agent`) plus bookkeeping fields (task, source, intervention...).

- Episodes can be added at any time (the data plane's snapshot reader calls
  :meth:`ReplayBuffer.add_episode` as snapshots advance); adding is guarded by a lock so a reader
  thread may feed a buffer the training loop samples from. Re-adding an ``episode_id`` already
  present is a no-op, so replaying a snapshot is idempotent.
- The n-step horizon may depend on the task (offline: 10 for long-horizon tasks, 1 otherwise;
  online: 1 everywhere, paper App. B2); :meth:`ReplayBuffer.set_n_step` rebuilds the transition
  table from the stored episodes when a stage switches.
- Sampling is task-balanced by default: a batch row picks a task uniformly among the tasks the
  buffer holds, then a transition uniformly within it. Uniform-over-steps sampling starves short
  tasks next to long ones (a 166-tick restocking demo beside 1950-tick gongfu_tea demos is ~5% of
  the steps: measured, every method then scored 0 on restocking). ``task_balanced=False`` restores
  uniform-over-transitions.
- Randomness is explicit: every sampling call takes a ``numpy.random.Generator``.
- Memory: the buffer keeps each :class:`EpisodeArrays` (for re-indexing) next to its normalised
  copy, about ``2 x 4 x (S + K + A)`` bytes per step (~1.2 kB for sim_state, i.e. ~1.2 GB per
  million steps). There is no eviction: the paper's online buffer only grows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lwd_learner.dataset import SOURCES, EpisodeArrays, Normalizer, Transitions, episode_transitions
from lwd_protocol.tasks import task_info

AGENT_KEYS: tuple[str, ...] = ("obs", "actions", "next_obs", "reward", "discount")
NStep = int | Mapping[str, int] | Callable[[str], int]


def paper_n_step(long_horizon: int = 10, short_horizon: int = 1) -> Callable[[str], int]:
    """The offline rule of the paper: ``long_horizon`` chunks for long-horizon tasks, else ``short_horizon``."""
    return lambda task: long_horizon if task_info(task).is_long_horizon else short_horizon


def _n_for(n_step: NStep, task: str) -> int:
    if callable(n_step):
        n = n_step(task)
    elif isinstance(n_step, Mapping):
        if task not in n_step:
            raise KeyError(f"n_step mapping has no entry for task {task!r}")
        n = n_step[task]
    else:
        n = n_step
    n = int(n)
    if n < 1:
        raise ValueError(f"n_step for task {task!r} must be >= 1, got {n}")
    return n


def to_agent_batch(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Only the keys :meth:`lwd_learner.agent.LWDAgent.update` reads (a stable pytree for ``jit``)."""
    return {k: batch[k] for k in AGENT_KEYS}


class _Rows:
    """Amortised-growth row storage: ``append`` copies into spare capacity, ``view`` is the filled part."""

    def __init__(self, row_shape: tuple[int, ...], dtype: np.dtype | type) -> None:
        self.data = np.zeros((16, *row_shape), dtype)
        self.size = 0

    def append(self, rows: np.ndarray) -> int:
        n = rows.shape[0]
        if self.size + n > self.data.shape[0]:
            grown = np.zeros((max(2 * self.data.shape[0], self.size + n), *self.data.shape[1:]), self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        offset = self.size
        self.data[offset : offset + n] = rows
        self.size += n
        return offset

    def view(self) -> np.ndarray:
        return self.data[: self.size]

    def clear(self) -> None:
        self.size = 0


_TABLE_FIELDS: dict[str, type] = {
    "state_idx": np.int64,  # row of s_t in the obs storage
    "next_idx": np.int64,  # row of the bootstrap state s_{t+kH}
    "action_idx": np.int64,  # row of a_t in the action storage
    "action_end": np.int64,  # one past the episode's last action row (padding limit)
    "reward": np.float32,
    "discount": np.float32,
    "k": np.int32,
    "terminal": bool,
    "human": bool,
    "intervention": bool,
    "padded": bool,
    "episode": np.int64,  # index into ReplayBuffer.episodes
    "step": np.int64,  # t inside the episode
    "task_id": np.int64,  # index into normalizer.tasks
    "source": np.int8,  # index into lwd_learner.dataset.SOURCES
    "success": bool,  # the episode succeeded
    "return_to_go": np.float32,  # Monte-Carlo return from s_t (RECAP)
}


@dataclass(frozen=True)
class _TaskRows:
    """Transition rows sorted by task: task k owns ``order[starts[k]:starts[k] + counts[k]]``."""

    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, task_ids: np.ndarray) -> _TaskRows:
        """Rebuilt once after each change of the table. Stable sort of int16 keys is a radix sort, O(n):
        ~40 ms for 2.6M rows (int64 keys: ~130 ms), paid by the next sample after an episode arrives."""
        order = np.argsort(task_ids.astype(np.int16), kind="stable")
        _, starts, counts = np.unique(task_ids[order], return_index=True, return_counts=True)
        return cls(order, starts, counts)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """A uniform task per row, then a uniform row of that task."""
        task = rng.integers(0, self.counts.size, size)
        return self.order[self.starts[task] + rng.integers(0, self.counts[task])]


@dataclass(frozen=True)
class _Stored:
    episode: EpisodeArrays
    state_offset: int  # first obs row
    action_offset: int  # first action row
    task_id: int


class ReplayBuffer:
    """Chunk-transition replay over whole episodes (see module docstring).

    Args:
        normalizer: observation/action normalisation and task one-hot layout.
        horizon: action chunk length ``H``.
        gamma: per-step discount (the chunk discount is ``gamma**H``).
        n_step: chunks per TD window, one int, a task->n mapping or a callable (e.g. :func:`paper_n_step`).
        stride: start a transition at every ``stride``-th step.
        task_balanced: weight tasks equally when sampling (module docstring), else every transition.
    """

    def __init__(
        self,
        normalizer: Normalizer,
        horizon: int,
        gamma: float,
        n_step: NStep = 1,
        stride: int = 1,
        task_balanced: bool = True,
    ) -> None:
        if horizon < 1 or stride < 1:
            raise ValueError(f"horizon and stride must be >= 1, got horizon={horizon} stride={stride}")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.normalizer = normalizer
        self.horizon = horizon
        self.gamma = gamma
        self.stride = stride
        self.n_step: NStep = n_step
        self.task_balanced = task_balanced
        self._lock = threading.Lock()
        self._by_task: _TaskRows | None = None  # rows grouped by task, rebuilt after the table changes
        if normalizer.horizon is not None and normalizer.horizon != horizon:
            raise ValueError(f"normaliser statistics are for {normalizer.horizon}-step chunks, buffer: {horizon}")
        self._obs = _Rows((normalizer.obs_dim,), np.float32)
        self._anchors = _Rows((len(normalizer.relative_dims),), np.float64)  # per obs row
        self._actions = _Rows((normalizer.action_dim,), np.float32)  # raw joint targets; encoded at sampling
        self._table = {name: _Rows((), dtype) for name, dtype in _TABLE_FIELDS.items()}
        self._stored: list[_Stored] = []
        self._ids: set[str] = set()

    # ------------------------------------------------------------------ contents

    def __len__(self) -> int:
        """Number of transitions (sampleable rows)."""
        return self._table["reward"].size

    @property
    def episodes(self) -> list[EpisodeArrays]:
        return [s.episode for s in self._stored]

    @property
    def num_episodes(self) -> int:
        return len(self._stored)

    @property
    def num_steps(self) -> int:
        return self._actions.size

    @property
    def obs_dim(self) -> int:
        return self.normalizer.obs_dim

    def column(self, name: str) -> np.ndarray:
        """A copy of one transition-table column (``_TABLE_FIELDS``), e.g. to pick sampling candidates."""
        if name not in self._table:
            raise KeyError(f"unknown replay column {name!r}; columns: {sorted(self._table)}")
        with self._lock:
            return self._table[name].view().copy()

    def summary(self) -> dict[str, float | int]:
        """Counts for logs and result files."""
        with self._lock:
            n = len(self)
            succ = [s.episode.success for s in self._stored]
            human = self._table["human"].view()
            inter = self._table["intervention"].view()
            return {
                "episodes": self.num_episodes,
                "steps": self.num_steps,
                "transitions": n,
                "successful_episodes": int(sum(succ)),
                "human_fraction": float(human.mean()) if n else 0.0,
                "intervention_fraction": float(inter.mean()) if n else 0.0,
            }

    # ------------------------------------------------------------------ writing

    def add_episode(self, episode: EpisodeArrays) -> int:
        """Store an episode and index its transitions; returns how many were added (0 for a known id)."""
        if episode.states.shape[1] != self.normalizer.state_dim:
            raise ValueError(
                f"episode {episode.episode_id or '<in-memory>'} has state dim {episode.states.shape[1]}, "
                f"the buffer's normaliser expects {self.normalizer.state_dim}"
            )
        if episode.actions.shape[1] != self.normalizer.action_dim:
            raise ValueError(
                f"episode {episode.episode_id or '<in-memory>'} has action dim {episode.actions.shape[1]}, "
                f"the buffer's normaliser expects {self.normalizer.action_dim}"
            )
        task_id = self.normalizer.task_id(episode.task)
        states = episode.states if episode.final_state is None else np.vstack([episode.states, episode.final_state])
        obs = self.normalizer.obs(states, episode.task)
        anchors = self.normalizer.anchors(states)
        with self._lock:
            if episode.episode_id and episode.episode_id in self._ids:
                return 0
            offset = self._obs.append(obs)
            self._anchors.append(anchors)
            stored = _Stored(episode, offset, self._actions.append(episode.actions), task_id)
            self._stored.append(stored)
            if episode.episode_id:
                self._ids.add(episode.episode_id)
            return self._index(len(self._stored) - 1, stored)

    def add_episodes(self, episodes: Sequence[EpisodeArrays]) -> int:
        return sum(self.add_episode(ep) for ep in episodes)

    def set_n_step(self, n_step: NStep) -> None:
        """Rebuild every transition for a new n-step rule (e.g. offline 10/1 -> online 1)."""
        with self._lock:
            self.n_step = n_step
            for rows in self._table.values():
                rows.clear()
            self._by_task = None
            for i, stored in enumerate(self._stored):
                self._index(i, stored)

    def _index(self, episode_index: int, stored: _Stored) -> int:
        ep = stored.episode
        tr: Transitions = episode_transitions(ep, self.horizon, self.gamma, _n_for(self.n_step, ep.task), self.stride)
        n = len(tr)
        if n == 0:
            return 0
        columns = {
            "state_idx": stored.state_offset + tr.start,
            "next_idx": stored.state_offset + tr.bootstrap,
            "action_idx": stored.action_offset + tr.start,
            "action_end": np.full(n, stored.action_offset + ep.length),
            "reward": tr.reward,
            "discount": tr.discount,
            "k": tr.k,
            "terminal": tr.terminal,
            "human": tr.human,
            "intervention": tr.intervention,
            "padded": tr.padded,
            "episode": np.full(n, episode_index),
            "step": tr.start,
            "task_id": np.full(n, stored.task_id),
            "source": np.full(n, SOURCES.index(ep.source)),
            "success": np.full(n, ep.success),
            "return_to_go": tr.return_to_go,
        }
        for name, values in columns.items():
            self._table[name].append(np.asarray(values, _TABLE_FIELDS[name]))
        self._by_task = None
        return n

    # ------------------------------------------------------------------ reading

    def sample(
        self, rng: np.random.Generator, batch_size: int, candidates: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """``batch_size`` transitions drawn with replacement: task-balanced (``task_balanced``) or
        uniformly, and uniformly from ``candidates`` rows when given."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        with self._lock:
            n = len(self)
            if n == 0:
                raise ValueError("cannot sample from an empty replay buffer")
            if candidates is None and self.task_balanced:
                idx = self._task_rows().sample(rng, batch_size)
            elif candidates is None:
                idx = rng.integers(0, n, batch_size)
            else:
                candidates = np.asarray(candidates, np.int64)
                if candidates.size == 0 or candidates.min() < 0 or candidates.max() >= n:
                    raise ValueError(f"candidates must be non-empty row indices in [0, {n})")
                idx = candidates[rng.integers(0, candidates.size, batch_size)]
            return self._gather(idx)

    def _task_rows(self) -> _TaskRows:
        if self._by_task is None:
            self._by_task = _TaskRows.of(self._table["task_id"].view())
        return self._by_task

    def gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The batch for explicit transition rows ``idx``."""
        with self._lock:
            idx = np.asarray(idx, np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
                raise IndexError(f"transition rows must be in [0, {len(self)})")
            return self._gather(idx)

    def _gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        col = {name: rows.view()[idx] for name, rows in self._table.items()}
        a_idx = col["action_idx"][:, None] + np.arange(self.horizon)[None, :]
        valid = a_idx < col["action_end"][:, None]
        a_idx = np.minimum(a_idx, col["action_end"][:, None] - 1)
        obs = self._obs.view()
        actions = self.normalizer.normalize_chunks(self._actions.view()[a_idx], self._anchors.view()[col["state_idx"]])
        return {
            "obs": obs[col["state_idx"]],
            "actions": actions,
            "next_obs": obs[col["next_idx"]],
            "reward": col["reward"],
            "discount": col["discount"],
            "action_valid": valid,
            "k": col["k"],
            "terminal": col["terminal"],
            "human": col["human"],
            "intervention": col["intervention"],
            "task_id": col["task_id"],
            "source": col["source"],
            "success": col["success"],
            "return_to_go": col["return_to_go"],
            "episode": col["episode"],
            "step": col["step"],
        }


class MixedSampler:
    """Batches mixing offline and online replay at a fixed ratio (paper App. B2: about 1:1).

    Each batch holds exactly ``round(batch_size * online_fraction)`` online rows while the online
    buffer has transitions, and only offline rows before that (and only online rows when the
    offline buffer is empty). The ``online`` field marks each row's origin.
    """

    def __init__(self, offline: ReplayBuffer, online: ReplayBuffer, online_fraction: float = 0.5) -> None:
        if not 0.0 <= online_fraction <= 1.0:
            raise ValueError(f"online_fraction must be in [0, 1], got {online_fraction}")
        if offline.obs_dim != online.obs_dim or offline.horizon != online.horizon:
            raise ValueError("offline and online buffers must share the observation layout and horizon")
        if offline.gamma != online.gamma:
            raise ValueError(f"offline gamma {offline.gamma} differs from online gamma {online.gamma}")
        self.offline = offline
        self.online = online
        self.online_fraction = online_fraction

    def split(self, batch_size: int) -> tuple[int, int]:
        """``(offline_rows, online_rows)`` the next batch will hold."""
        if len(self.online) == 0:
            return batch_size, 0
        if len(self.offline) == 0:
            return 0, batch_size
        n_on = round(batch_size * self.online_fraction)
        return batch_size - n_on, n_on

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        n_off, n_on = self.split(batch_size)
        parts = []
        if n_off:
            parts.append((self.offline.sample(rng, n_off), False))
        if n_on:
            parts.append((self.online.sample(rng, n_on), True))
        keys = parts[0][0].keys()
        batch = {k: np.concatenate([p[k] for p, _ in parts]) for k in keys}
        batch["online"] = np.concatenate([np.full(len(p["reward"]), flag) for p, flag in parts])
        return batch
