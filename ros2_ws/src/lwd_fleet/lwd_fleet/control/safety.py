"""SafetyFilter: the single last gate in front of the joint-command topic.

Every joint vector sent to the arms -- from the policy, a teleoperator or a malformed message --
goes through ``SafetyFilter.filter``. The filter never raises on bad input: it holds instead, and
says why in flags and a reason string, so the caller can log it and the recorder can store the
command that was *actually* sent.

Guarantees (property-tested in tests/robot/test_safety_*.py), for any input whatsoever:
  * the output is within ``[lower, upper]`` per joint;
  * the output differs from the previous output by at most ``max_step`` per joint
    (only ``reset()`` can break this, by design: it re-seeds from a measured pose);
  * while the e-stop is latched or hold mode is on, the output equals the previous output.

Bad inputs hold the *whole* vector (not just the bad joints): a vector with one NaN or the wrong
length is a corrupt message, and mixing its other joints with the held ones could make a pose the
sender never asked for.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lwd_protocol.robot_spec import JOINT_NAMES

_DEFAULT_GRIPPERS = tuple(i for i, name in enumerate(JOINT_NAMES) if name.endswith("gripper"))


class SafetyFlag(enum.IntFlag):
    """What the filter did to a command. NONE means it passed through unchanged."""

    NONE = 0
    CLAMPED = 1  # some joint was outside [lower, upper]
    RATE_LIMITED = 2  # some joint moved more than max_step from the last command
    NON_FINITE = 4  # NaN or +-inf in the input -> held
    WRONG_LENGTH = 8  # not a 1-D vector of num_joints values -> held
    MALFORMED = 16  # not numeric at all (None, strings, ragged lists...) -> held
    ESTOP = 32  # e-stop latched -> held
    HOLD = 64  # hold mode on (watchdog, no policy, explicit) -> held


HELD_FLAGS = SafetyFlag.NON_FINITE | SafetyFlag.WRONG_LENGTH | SafetyFlag.MALFORMED | SafetyFlag.ESTOP | SafetyFlag.HOLD


@dataclass(frozen=True)
class SafetyConfig:
    """Per-joint position limits and per-tick step limits (rad/tick for arm joints, gripper units/tick).

    Limits belong to each robot's description (sim model or hardware params YAML), not to the
    protocol, so they are always passed in. ``gripper_indices`` picks which joints use
    ``max_step_gripper`` instead of ``max_step_arm``.
    """

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    max_step_arm: float
    max_step_gripper: float
    gripper_indices: tuple[int, ...] = _DEFAULT_GRIPPERS
    joint_names: tuple[str, ...] | None = None  # for reason strings; defaults to the protocol's names
    _max_step: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lower = tuple(float(x) for x in self.lower)
        upper = tuple(float(x) for x in self.upper)
        n = len(lower)
        if n == 0 or len(upper) != n:
            raise ValueError(f"lower/upper must be non-empty and equally long, got {len(lower)} and {len(upper)}")
        lo, hi = np.asarray(lower), np.asarray(upper)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError("joint limits must be finite")
        if np.any(lo > hi):
            bad = [int(i) for i in np.flatnonzero(lo > hi)]
            raise ValueError(f"lower > upper for joint indices {bad}")
        for name, step in (("max_step_arm", self.max_step_arm), ("max_step_gripper", self.max_step_gripper)):
            if not (np.isfinite(step) and step > 0):
                raise ValueError(f"{name} must be finite and > 0, got {step!r}")
        grippers = tuple(int(i) for i in self.gripper_indices)
        if any(not 0 <= i < n for i in grippers):
            raise ValueError(f"gripper_indices {grippers} out of range for {n} joints")
        names = self.joint_names
        if names is None:
            names = JOINT_NAMES if n == len(JOINT_NAMES) else tuple(f"joint_{i}" for i in range(n))
        if len(names) != n:
            raise ValueError(f"joint_names has {len(names)} entries for {n} joints")
        steps = [float(self.max_step_gripper) if i in grippers else float(self.max_step_arm) for i in range(n)]
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "gripper_indices", grippers)
        object.__setattr__(self, "joint_names", tuple(names))
        object.__setattr__(self, "_max_step", tuple(steps))

    @classmethod
    def from_named_limits(
        cls,
        limits: Mapping[str, tuple[float, float]],
        max_step_arm: float,
        max_step_gripper: float,
        joint_names: Sequence[str] = JOINT_NAMES,
    ) -> SafetyConfig:
        """Build from a {joint_name: (lower, upper)} map (robot description / params YAML).

        Ordered by ``joint_names`` (the protocol's action order); joints named ``*gripper`` get the
        gripper step. A missing or unknown joint raises: a silent default limit is never safe.
        """
        names = tuple(joint_names)
        missing = [n for n in names if n not in limits]
        unknown = sorted(set(limits) - set(names))
        if missing or unknown:
            raise ValueError(f"joint limits: missing {missing}, unknown {unknown}")
        return cls(
            lower=tuple(float(limits[n][0]) for n in names),
            upper=tuple(float(limits[n][1]) for n in names),
            max_step_arm=max_step_arm,
            max_step_gripper=max_step_gripper,
            gripper_indices=tuple(i for i, n in enumerate(names) if n.endswith("gripper")),
            joint_names=names,
        )

    @property
    def num_joints(self) -> int:
        return len(self.lower)

    @property
    def max_step(self) -> np.ndarray:
        """Per-joint step limit (arm or gripper value), shape (num_joints,)."""
        return np.asarray(self._max_step, dtype=np.float64)


@dataclass(frozen=True)
class SafetyResult:
    """The command to send (always safe) and what the filter did to get it."""

    command: np.ndarray  # float64 (num_joints,), a fresh array the caller may keep
    flags: SafetyFlag
    reason: str  # "" when flags == NONE

    @property
    def held(self) -> bool:
        """True when the input was ignored and the previous command repeated."""
        return bool(self.flags & HELD_FLAGS)

    @property
    def modified(self) -> bool:
        return self.flags != SafetyFlag.NONE


class SafetyFilter:
    """Stateful clamp + rate limiter + e-stop latch + hold mode for joint-position commands.

    Seeded with the measured joint position at start-up (the arms are wherever they are; the
    first command must move from there). The filter keeps the last command it emitted, and every
    new output is a bounded step away from it.
    """

    def __init__(self, config: SafetyConfig, initial_position: Sequence[float] | np.ndarray) -> None:
        self._cfg = config
        self._lo = np.asarray(config.lower, dtype=np.float64)
        self._hi = np.asarray(config.upper, dtype=np.float64)
        self._step = config.max_step
        self._estop_reason: str | None = None
        self._hold_reason: str | None = None
        self._last = self._lo.copy()
        self.reset(initial_position)

    # ----------------------------------------------------------------- state
    @property
    def config(self) -> SafetyConfig:
        return self._cfg

    @property
    def last_command(self) -> np.ndarray:
        return self._last.copy()

    @property
    def estopped(self) -> bool:
        return self._estop_reason is not None

    @property
    def hold_active(self) -> bool:
        return self._hold_reason is not None

    def reset(self, position: Sequence[float] | np.ndarray) -> None:
        """Re-seed the reference pose from a *measured* position (start-up, driver restart).

        The only way to make the next output jump: call it only while the arms are not being
        commanded. The pose is clamped into the limits; invalid poses raise ValueError because
        they are a wiring bug, not a runtime message to hold on.
        """
        pos = np.asarray(position, dtype=np.float64)
        if pos.shape != (self._cfg.num_joints,) or not np.all(np.isfinite(pos)):
            raise ValueError(f"reset position must be {self._cfg.num_joints} finite values, got {pos!r}")
        self._last = np.clip(pos, self._lo, self._hi)

    def engage_estop(self, reason: str = "e-stop") -> None:
        """Latch the e-stop: every output holds until release_estop() is called explicitly."""
        if self._estop_reason is None:
            self._estop_reason = reason or "e-stop"

    def release_estop(self) -> bool:
        """Explicit release. Returns whether a latch was released. Motion resumes rate-limited."""
        was = self._estop_reason is not None
        self._estop_reason = None
        return was

    def set_hold(self, active: bool, reason: str = "hold") -> None:
        """Hold mode (watchdog, no policy loaded, operator pause): outputs repeat the last command."""
        self._hold_reason = (reason or "hold") if active else None

    # ---------------------------------------------------------------- filter
    def hold(self, reason: str = "hold") -> SafetyResult:
        """One tick of holding, e.g. when no source produced a command this tick."""
        flags = SafetyFlag.HOLD
        if self._estop_reason is not None:
            flags |= SafetyFlag.ESTOP
            reason = f"{self._estop_reason}; {reason}"
        return SafetyResult(self._last.copy(), flags, reason)

    def filter(self, command: object) -> SafetyResult:
        """Make ``command`` safe. Never raises; bad input holds the previous command."""
        if self._estop_reason is not None:
            return SafetyResult(self._last.copy(), SafetyFlag.ESTOP, f"e-stop latched: {self._estop_reason}")
        if self._hold_reason is not None:
            return SafetyResult(self._last.copy(), SafetyFlag.HOLD, f"hold: {self._hold_reason}")

        target, flag, why = self._parse(command)
        if target is None:
            return SafetyResult(self._last.copy(), flag, why)

        clamped = np.clip(target, self._lo, self._hi)
        flags = SafetyFlag.NONE
        reasons: list[str] = []
        out_of_range = clamped != target
        if np.any(out_of_range):
            flags |= SafetyFlag.CLAMPED
            reasons.append(f"clamped {self._names(out_of_range)}")

        # Differences of in-limit values can overflow only for absurd (>1e308-wide) limits; inf
        # then clips to +-step, which is still the right direction.
        with np.errstate(over="ignore", invalid="ignore"):
            delta = clamped - self._last
        step = np.clip(delta, -self._step, self._step)
        too_fast = np.abs(delta) > self._step
        if np.any(too_fast):
            flags |= SafetyFlag.RATE_LIMITED
            reasons.append(f"rate-limited {self._names(too_fast)}")
        # Final clip absorbs last-ulp rounding of last + step; both ends are inside the limits.
        out = np.clip(self._last + step, self._lo, self._hi)
        self._last = out
        return SafetyResult(out.copy(), flags, "; ".join(reasons))

    # --------------------------------------------------------------- helpers
    def _parse(self, command: object) -> tuple[np.ndarray | None, SafetyFlag, str]:
        n = self._cfg.num_joints
        try:
            arr = np.asarray(command)
        except Exception as exc:  # ragged sequences, odd objects: any failure is a malformed message
            return None, SafetyFlag.MALFORMED, f"malformed command ({type(exc).__name__}): holding"
        if arr.dtype.kind not in "iuf":
            return None, SafetyFlag.MALFORMED, f"non-numeric command (dtype {arr.dtype}): holding"
        if arr.shape != (n,):
            return None, SafetyFlag.WRONG_LENGTH, f"command shape {arr.shape}, expected ({n},): holding"
        with np.errstate(over="ignore", invalid="ignore"):
            vec = arr.astype(np.float64)
        finite = np.isfinite(vec)
        if not np.all(finite):
            return None, SafetyFlag.NON_FINITE, f"non-finite values in {self._names(~finite)}: holding"
        return vec, SafetyFlag.NONE, ""

    def _names(self, mask: np.ndarray) -> str:
        names = self._cfg.joint_names or ()
        return "[" + ", ".join(names[i] for i in np.flatnonzero(mask)) + "]"
