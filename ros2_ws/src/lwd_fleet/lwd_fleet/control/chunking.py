"""ChunkExecutor: runs H-step action chunks at the control rate while inference runs ahead.

Indexing. Every chunk carries ``start_step``: the control tick of the observation it was
conditioned on, and row ``i`` is the target for tick ``start_step + i``. Inference takes a few
ticks, so when a chunk arrives at tick ``t`` its rows for ticks ``< t`` are stale and are dropped
("late chunks are aligned by their start_step"); a chunk whose rows are all in the past is
dropped whole. Ticks may skip (a missed control period simply skips the rows meant for it).

Scheduling. ``step(tick)`` sets ``request_inference`` when at most ``request_lead_ticks`` planned
rows remain after the current one (so a chunk computed from *this* tick's observation arrives
before the plan runs out). ``request_lead_ticks`` should be the inference latency in ticks plus a
margin: see ``lead_ticks_for_latency``. One request is outstanding at a time; it is repeated if
no chunk conditioned on it arrives within ``request_timeout_ticks``.

Transition scheme (linear cross-fade). When a new chunk is merged at tick ``t``, the old
trajectory -- the old plan's remaining rows, extended by holding its last row (which is what
would be executed if no chunk came) -- is cross-faded into the new chunk's aligned rows over
``L = min(blend_steps, rows left)`` ticks: ``a[t+j] = (1-w_j) old[t+j] + w_j new[t+j]`` with
``w_j = (j+1)/(L+1)``; after that the new chunk is used as is. With no old plan (start-up, the
plan ran out, or after ``reset``), the old trajectory is the pose currently commanded, so the
first policy command after a human takeover continues from where the human left the arm
(bumpless), ramping over ``takeover_blend_steps``. That pose comes from ``reset``, ``start_pose``
or ``step(current_pose=...)``; without any, the first chunk starts unblended (the safety filter
still rate-limits it).

Holding. ``action is None`` means hold the current command: no chunk yet (``NO_CHUNK``) or the
plan ran out before the next chunk (``INFERENCE_BEHIND``). The caller holds via the safety filter.
No threads here: the caller feeds chunks in with ``submit`` and ticks with ``step``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from lwd_protocol.robot_spec import ACTION_DIM, CHUNK_HORIZON, CONTROL_RATE_HZ


def lead_ticks_for_latency(latency_s: float, rate_hz: float = CONTROL_RATE_HZ, margin_ticks: int = 2) -> int:
    """Ticks of plan that must remain when a request is sent: latency (rounded up) + margin."""
    if not (latency_s >= 0 and math.isfinite(latency_s)) or rate_hz <= 0 or margin_ticks < 0:
        raise ValueError(f"bad latency/rate/margin: {latency_s!r}, {rate_hz!r}, {margin_ticks!r}")
    return max(1, math.ceil(latency_s * rate_hz) + margin_ticks)


@dataclass(frozen=True)
class ActionChunk:
    """H joint targets from one inference; row i is for control tick start_step + i."""

    start_step: int
    actions: np.ndarray  # (H, A)
    policy_version: int = 0
    latency_s: float | None = None  # measured inference latency, for logs/status


@dataclass(frozen=True)
class ExecutorConfig:
    """Defaults: 30-step chunks of 16 joints at 30 Hz; request with ~6 ticks (200 ms) of plan left."""

    horizon: int = CHUNK_HORIZON
    action_dim: int = ACTION_DIM
    request_lead_ticks: int = 6  # = lead_ticks_for_latency(0.12): ORT-CPU p99 under load + 2 ticks
    blend_steps: int = 5
    takeover_blend_steps: int = 10
    request_timeout_ticks: int = 15

    def __post_init__(self) -> None:
        if self.horizon < 2 or self.action_dim < 1:
            raise ValueError(f"bad chunk shape ({self.horizon}, {self.action_dim})")
        if not 1 <= self.request_lead_ticks < self.horizon:
            raise ValueError(f"request_lead_ticks must be in [1, {self.horizon - 1}], got {self.request_lead_ticks}")
        if self.blend_steps < 0 or self.takeover_blend_steps < 0:
            raise ValueError("blend lengths must be >= 0")
        if self.request_timeout_ticks < 1:
            raise ValueError("request_timeout_ticks must be >= 1")

    @classmethod
    def for_latency(cls, latency_s: float, margin_ticks: int = 2, **kwargs: int) -> ExecutorConfig:
        rate = CONTROL_RATE_HZ
        horizon = kwargs.get("horizon", CHUNK_HORIZON)
        lead = min(lead_ticks_for_latency(latency_s, rate, margin_ticks), horizon - 1)
        return cls(request_lead_ticks=lead, **kwargs)


class ExecutorStatus(enum.Enum):
    NO_CHUNK = "no_chunk"  # nothing to execute yet: hold
    RUNNING = "running"
    BLENDING = "blending"  # inside a cross-fade window
    INFERENCE_BEHIND = "inference_behind"  # plan exhausted before the next chunk arrived: hold


@dataclass(frozen=True)
class ExecutorStep:
    """What to do on one tick. ``action is None`` means hold."""

    tick: int
    action: np.ndarray | None
    status: ExecutorStatus
    request_inference: bool  # capture this tick's observation and send an inference request
    remaining: int  # planned rows after this tick
    policy_version: int
    events: tuple[str, ...] = field(default_factory=tuple)  # merges / drops, for logs

    @property
    def hold(self) -> bool:
        return self.action is None

    @property
    def reason(self) -> str:
        if self.status is ExecutorStatus.INFERENCE_BEHIND:
            return "inference behind: action chunk exhausted"
        if self.status is ExecutorStatus.NO_CHUNK:
            return "no action chunk yet"
        return ""


class ChunkExecutor:
    """Turns a stream of (late, overlapping) chunks into one action per tick. See module docstring."""

    def __init__(self, config: ExecutorConfig | None = None, start_pose: np.ndarray | None = None) -> None:
        self.cfg = config or ExecutorConfig()
        self._plan: np.ndarray | None = None  # rows for ticks plan_start, plan_start+1, ...
        self._plan_start = 0
        self._plan_version = 0
        self._merged_start: int | None = None  # start_step of the newest merged chunk
        self._pending: ActionChunk | None = None
        self._requested_at: int | None = None
        self._last_tick: int | None = None
        self._pose: np.ndarray | None = None  # pose currently commanded (blend origin when no plan)
        self._min_start = -(2**62)  # chunks conditioned before this tick are discarded
        self._blend_next = self.cfg.takeover_blend_steps
        self._blend_end = -(2**62)  # ticks before this are inside a cross-fade
        self.last_rejection = ""
        self.stale_chunks_dropped = 0
        if start_pose is not None:
            self._pose = self._check_pose(start_pose)

    # ------------------------------------------------------------------ API
    def reset(self, tick: int, pose: np.ndarray) -> None:
        """Hand control (back) to the policy at ``tick`` from the commanded ``pose`` (bumpless).

        Drops the plan, any pending chunk and any chunk conditioned on an observation before
        ``tick`` (taken while the human was driving); the first new chunk ramps in from ``pose``.
        """
        self._plan = None
        self._pending = None
        self._requested_at = None
        self._merged_start = None
        self._pose = self._check_pose(pose)
        self._min_start = int(tick)
        self._last_tick = int(tick) - 1
        self._blend_next = self.cfg.takeover_blend_steps
        self._blend_end = -(2**62)

    def submit(self, chunk: ActionChunk) -> bool:
        """Offer a freshly inferred chunk. False (with ``last_rejection``) if unusable or superseded."""
        actions = np.asarray(chunk.actions, dtype=np.float64)
        expected = (self.cfg.horizon, self.cfg.action_dim)
        reason = ""
        if actions.shape != expected:
            reason = f"chunk shape {actions.shape}, expected {expected}"
        elif not np.all(np.isfinite(actions)):
            reason = "chunk has non-finite values"
        elif chunk.start_step < self._min_start:
            reason = f"chunk conditioned at step {chunk.start_step}, before policy (re)start at {self._min_start}"
        elif self._merged_start is not None and chunk.start_step <= self._merged_start:
            reason = f"chunk from step {chunk.start_step} is not newer than the executing one ({self._merged_start})"
        elif self._pending is not None and chunk.start_step < self._pending.start_step:
            reason = f"chunk from step {chunk.start_step} is older than the pending one ({self._pending.start_step})"
        if reason:
            self.last_rejection = reason
            return False
        self._pending = ActionChunk(int(chunk.start_step), actions, int(chunk.policy_version), chunk.latency_s)
        return True

    def step(self, tick: int, current_pose: np.ndarray | None = None) -> ExecutorStep:
        """Action for ``tick`` (strictly increasing). ``current_pose``: the pose actually commanded
        now (the safety filter's last output); it is the blend origin if the plan has run out."""
        tick = int(tick)
        if self._last_tick is not None and tick <= self._last_tick:
            raise ValueError(f"tick {tick} is not after the previous tick {self._last_tick}")
        self._last_tick = tick
        if current_pose is not None:
            self._pose = self._check_pose(current_pose)

        events: list[str] = []
        self._merge(tick, events)

        action: np.ndarray | None = None
        remaining = 0
        if self._plan is None:
            status = ExecutorStatus.NO_CHUNK
        else:
            idx = tick - self._plan_start
            if idx < len(self._plan):
                action = self._plan[idx].copy()
                remaining = len(self._plan) - idx - 1
                status = ExecutorStatus.BLENDING if tick < self._blend_end else ExecutorStatus.RUNNING
            else:
                status = ExecutorStatus.INFERENCE_BEHIND

        request = False
        outstanding = self._requested_at is not None and tick - self._requested_at < self.cfg.request_timeout_ticks
        if not outstanding and (action is None or remaining <= self.cfg.request_lead_ticks):
            request = True
            if self._requested_at is not None:
                events.append(f"re-requesting: no chunk for the request from step {self._requested_at}")
            self._requested_at = tick
        if action is not None:
            self._pose = action
        return ExecutorStep(tick, action, status, request, remaining, self._plan_version, tuple(events))

    # -------------------------------------------------------------- helpers
    def _merge(self, tick: int, events: list[str]) -> None:
        chunk = self._pending
        if chunk is None or chunk.start_step > tick:
            return  # nothing new, or conditioned on a future tick: wait for it
        self._pending = None
        offset = tick - chunk.start_step
        if offset >= self.cfg.horizon:
            self.stale_chunks_dropped += 1
            events.append(f"dropped stale chunk from step {chunk.start_step} at tick {tick}")
            return
        new = chunk.actions[offset:]
        old = self._old_trajectory(tick, len(new))
        blend = min(self._blend_next if self._plan is None else self.cfg.blend_steps, len(new))
        plan = new.copy()
        if old is not None and blend > 0:
            w = (np.arange(1, blend + 1, dtype=np.float64) / (blend + 1))[:, None]
            plan[:blend] = (1.0 - w) * old[:blend] + w * new[:blend]
        self._plan, self._plan_start = plan, tick
        self._plan_version = chunk.policy_version
        self._merged_start = chunk.start_step
        self._blend_end = tick + (blend if old is not None else 0)
        self._blend_next = self.cfg.blend_steps
        if self._requested_at is not None and chunk.start_step >= self._requested_at:
            self._requested_at = None
        events.append(f"merged chunk from step {chunk.start_step} at tick {tick} ({offset} stale rows dropped)")

    def _old_trajectory(self, tick: int, n: int) -> np.ndarray | None:
        """Old plan rows for ticks tick..tick+n-1, padded by holding its last row (or the pose)."""
        rows = np.empty((0, self.cfg.action_dim))
        if self._plan is not None:
            rows = self._plan[max(0, tick - self._plan_start) :]
        if len(rows) == 0:
            if self._pose is None:
                return None
            rows = self._pose[None, :]
        if len(rows) < n:
            rows = np.concatenate([rows, np.repeat(rows[-1:], n - len(rows), axis=0)])
        return rows[:n]

    def _check_pose(self, pose: np.ndarray) -> np.ndarray:
        arr = np.asarray(pose, dtype=np.float64)
        if arr.shape != (self.cfg.action_dim,) or not np.all(np.isfinite(arr)):
            raise ValueError(f"pose must be {self.cfg.action_dim} finite values")
        return arr.copy()
