"""CameraSynchronizer: the newest time-consistent (head, left_wrist, right_wrist) frame triple.

The policy was trained on frames captured together; feeding it a head frame from now and a wrist
frame from 300 ms ago makes a scene that never existed. Each camera publishes on its own, so
this keeps the last few frames per camera and picks the triple whose stamps lie within
``max_spread_s`` of each other and whose oldest stamp is as new as possible. Cameras with no
frame (missing) or whose newest frame is older than ``max_age_s`` (stale) are named, so the
caller can hold with a precise reason. Pure bookkeeping: no threads, no clock; pass ``now``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lwd_protocol.robot_spec import CAMERA_NAMES

_STAMP_EPS_S = 1e-9  # ROS stamps are integer ns: absorb float rounding of low + spread


@dataclass(frozen=True)
class SyncConfig:
    camera_names: tuple[str, ...] = CAMERA_NAMES
    max_spread_s: float = 0.020
    max_age_s: float = 0.2
    buffer_len: int = 4  # frames kept per camera; a few periods cover differing latencies

    def __post_init__(self) -> None:
        if not self.camera_names or len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f"camera names must be unique and non-empty: {self.camera_names}")
        if not (self.max_spread_s >= 0 and self.max_age_s > 0 and math.isfinite(self.max_age_s)):
            raise ValueError("max_spread_s must be >= 0 and max_age_s finite and > 0")
        if self.buffer_len < 1:
            raise ValueError("buffer_len must be >= 1")


@dataclass(frozen=True)
class SyncResult:
    """``frames`` is None unless a consistent, fresh triple exists (then ok is True)."""

    frames: Mapping[str, Any] | None
    stamps: Mapping[str, float] | None
    spread_s: float | None
    is_new: bool  # True the first time this triple is handed out
    missing: tuple[str, ...]
    stale: tuple[str, ...]
    reason: str

    @property
    def ok(self) -> bool:
        return self.frames is not None


class CameraSynchronizer:
    def __init__(self, config: SyncConfig | None = None) -> None:
        self.cfg = config or SyncConfig()
        # per camera: stamps ascending, frames aligned
        self._stamps: dict[str, list[float]] = {c: [] for c in self.cfg.camera_names}
        self._frames: dict[str, list[Any]] = {c: [] for c in self.cfg.camera_names}
        self._last_handed: tuple[float, ...] | None = None

    def add(self, camera: str, stamp_s: float, frame: Any) -> None:
        """Store one frame. Out-of-order frames are inserted in place; duplicates replace."""
        if camera not in self._stamps:
            raise KeyError(f"unknown camera {camera!r}; expected one of {self.cfg.camera_names}")
        if not math.isfinite(stamp_s):
            return
        stamps, frames = self._stamps[camera], self._frames[camera]
        i = bisect.bisect_left(stamps, stamp_s)
        if i < len(stamps) and stamps[i] == stamp_s:
            frames[i] = frame
        else:
            stamps.insert(i, float(stamp_s))
            frames.insert(i, frame)
        excess = len(stamps) - self.cfg.buffer_len
        if excess > 0:
            del stamps[:excess], frames[:excess]

    def latest(self, now_s: float) -> SyncResult:
        cams = self.cfg.camera_names
        missing = tuple(c for c in cams if not self._stamps[c])
        stale = tuple(c for c in cams if self._stamps[c] and now_s - self._stamps[c][-1] > self.cfg.max_age_s)
        if missing or stale:
            parts = [f"missing {', '.join(missing)}"] if missing else []
            parts += [f"stale {c} ({now_s - self._stamps[c][-1]:.3f} s)" for c in stale]
            return SyncResult(None, None, None, False, missing, stale, "cameras: " + "; ".join(parts))

        best = self._best_triple()
        if best is None:
            newest = {c: self._stamps[c][-1] for c in cams}
            spread = max(newest.values()) - min(newest.values())
            return SyncResult(
                None,
                None,
                None,
                False,
                (),
                (),
                f"cameras: no frame set within "
                f"{self.cfg.max_spread_s * 1e3:.0f} ms (newest frames span {spread * 1e3:.0f} ms)",
            )
        idx = best
        stamps = {c: self._stamps[c][idx[c]] for c in cams}
        oldest = min(stamps.values())
        if now_s - oldest > self.cfg.max_age_s:
            old = tuple(c for c in cams if now_s - stamps[c] > self.cfg.max_age_s)
            return SyncResult(
                None,
                None,
                None,
                False,
                (),
                old,
                f"cameras: newest consistent set is {now_s - oldest:.3f} s old ({', '.join(old)})",
            )
        key = tuple(stamps[c] for c in cams)
        is_new = key != self._last_handed
        self._last_handed = key
        frames = {c: self._frames[c][idx[c]] for c in cams}
        return SyncResult(frames, stamps, max(stamps.values()) - oldest, is_new, (), (), "")

    def _best_triple(self) -> dict[str, int] | None:
        """Maximise the oldest stamp of a set whose spread is <= max_spread_s.

        For each candidate lower bound L (any buffered stamp), take each camera's newest frame in
        [L, L + spread]; the first L (newest first) for which every camera has one wins.
        """
        spread = self.cfg.max_spread_s
        candidates = sorted({s for stamps in self._stamps.values() for s in stamps}, reverse=True)
        for low in candidates:
            pick: dict[str, int] = {}
            for cam, stamps in self._stamps.items():
                j = bisect.bisect_right(stamps, low + spread + _STAMP_EPS_S) - 1
                if j < 0 or stamps[j] < low:
                    break
                pick[cam] = j
            else:
                return pick
        return None
