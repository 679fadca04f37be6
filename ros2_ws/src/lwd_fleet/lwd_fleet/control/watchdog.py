"""StalenessWatchdog: is every input the policy needs fresh enough to act on?

The policy must not act on a frozen camera or joint-state stream (a dropped driver, a USB
reset), and the arms must not drift on an exhausted plan. The watchdog tracks the newest stamp
per source (each camera and the joint states) and the inference state, and answers HOLD with a
reason string in the format the ControlMode message carries, e.g.
"watchdog: head camera stale 0.41 s (max 0.20 s)".

Stamps and ``now`` are seconds on one clock (the node's clock; sim time in simulation). Stamps
from the future beyond ``max_future_s`` are flagged too: they mean the clocks disagree, and then
ages are meaningless.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from lwd_protocol.names import RosTopics
from lwd_protocol.robot_spec import CAMERA_NAMES

JOINT_STATES = RosTopics.JOINT_STATES  # source key of the joint-state stream


def _default_max_age() -> dict[str, float]:
    return {**{cam: 0.2 for cam in CAMERA_NAMES}, JOINT_STATES: 0.1}


@dataclass(frozen=True)
class WatchdogConfig:
    """Max age per source (s). Cameras default to 0.2 s (6 frames at 30 Hz), joint states 0.1 s."""

    max_age_s: Mapping[str, float] = field(default_factory=_default_max_age)
    max_future_s: float = 0.05
    inference_grace_s: float = 0.0  # how long the plan may be exhausted before it is a HOLD reason

    def __post_init__(self) -> None:
        if not self.max_age_s:
            raise ValueError("max_age_s needs at least one source")
        for name, age in self.max_age_s.items():
            if not (math.isfinite(age) and age > 0):
                raise ValueError(f"max age of {name!r} must be finite and > 0, got {age!r}")
        if not (self.max_future_s >= 0 and self.inference_grace_s >= 0):
            raise ValueError("max_future_s and inference_grace_s must be >= 0")


@dataclass(frozen=True)
class WatchdogStatus:
    ok: bool
    reasons: tuple[str, ...]
    stale: tuple[str, ...]  # source names (cameras, joint_states, "inference")

    @property
    def hold(self) -> bool:
        return not self.ok

    @property
    def reason(self) -> str:
        return "watchdog: " + "; ".join(self.reasons) if self.reasons else ""


class StalenessWatchdog:
    """Per-source freshness + inference-exhausted tracking. No clock of its own: pass ``now``."""

    def __init__(self, config: WatchdogConfig | None = None) -> None:
        self.cfg = config or WatchdogConfig()
        self._stamps: dict[str, float] = {}
        self._behind_since: float | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.cfg.max_age_s)

    def update(self, source: str, stamp_s: float) -> None:
        """Record a message stamp. Older-than-known stamps (reordering) never make a source younger."""
        if source not in self.cfg.max_age_s:
            raise KeyError(f"unknown watchdog source {source!r}; configured: {self.sources}")
        if not math.isfinite(stamp_s):
            return  # a broken stamp is no evidence of freshness
        prev = self._stamps.get(source)
        if prev is None or stamp_s > prev:
            self._stamps[source] = float(stamp_s)

    def report_inference(self, exhausted: bool, now_s: float) -> None:
        """Tell the watchdog whether the chunk executor ran out of plan this tick."""
        if not exhausted:
            self._behind_since = None
        elif self._behind_since is None:
            self._behind_since = float(now_s)

    def forget(self) -> None:
        """Drop all stamps (e.g. after a driver restart): every source must report again."""
        self._stamps.clear()
        self._behind_since = None

    def check(self, now_s: float) -> WatchdogStatus:
        reasons: list[str] = []
        stale: list[str] = []
        for source, max_age in self.cfg.max_age_s.items():
            label = f"{source} camera" if source in CAMERA_NAMES else source
            stamp = self._stamps.get(source)
            if stamp is None:
                reasons.append(f"{label} never received")
                stale.append(source)
                continue
            age = now_s - stamp
            if age > max_age:
                reasons.append(f"{label} stale {age:.2f} s (max {max_age:.2f} s)")
                stale.append(source)
            elif age < -self.cfg.max_future_s:
                reasons.append(f"{label} stamp {-age:.2f} s in the future (clock mismatch)")
                stale.append(source)
        if self._behind_since is not None:
            behind = now_s - self._behind_since
            if behind >= self.cfg.inference_grace_s:
                reasons.append(f"inference behind: action chunk exhausted for {behind:.2f} s")
                stale.append("inference")
        return WatchdogStatus(not reasons, tuple(reasons), tuple(stale))
