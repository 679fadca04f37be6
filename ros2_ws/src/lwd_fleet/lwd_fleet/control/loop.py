"""ControlLoop: who drives the arms on each 30 Hz tick, and the one safe command that results.

The controller node feeds messages in and calls ``tick`` once per control period; everything that
decides the command lives here, free of ROS, so it is property-testable. Priority per tick:

  1. e-stop latched                       -> HOLD (mode ESTOP) until ``release_estop`` (explicit)
  2. episode start: re-seed pending       -> HOLD until a joint state taken after the reset arrives
  3. human engaged (teleop commands)      -> HUMAN; stream stale -> HOLD until release or new command
  4. no policy loaded                     -> HOLD
  5. observations stale / not consistent  -> HOLD (watchdog reason)
  6. policy: ChunkExecutor action         -> POLICY; plan exhausted -> HOLD ("inference behind")

Whatever wins, the command goes through the SafetyFilter (limits, per-tick step, e-stop latch),
so no input -- NaN, huge, wrong length, a malformed chunk -- can produce an out-of-limit or
too-fast joint command.

Bumpless hand-over, both ways:
  * policy -> human: the human command starts from the pose commanded on the previous tick.
    Velocity commands (joystick) integrate from that pose; absolute position targets (a scripted
    "human") are approached with a linear ramp that closes the gap over ``human_blend_steps``.
  * human/hold -> policy: the old chunk is discarded (``ChunkExecutor.reset``) and a fresh one
    is requested from the current observation; it ramps in from the commanded pose over the
    executor's ``takeover_blend_steps``, and until it arrives the pose is held.

Human commands (``HumanCommand``) come from ``teleop/joint_target`` (sensor_msgs/JointState):
``name`` = the joints the human drives (per-arm selection; empty name + 16 positions = all joints),
``position`` = absolute targets, or ``velocity`` (rad/s, gripper m/s) = deltas integrated here. An
empty message is an explicit release. The human stays engaged while commands keep arriving within
``human_timeout_s``; a stream that stops without a release holds the arms (a lost deadman never
hands control back to the policy by itself).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lwd_fleet.control.chunking import ActionChunk, ChunkExecutor, ExecutorConfig, ExecutorStatus
from lwd_fleet.control.safety import SafetyConfig, SafetyFilter, SafetyFlag, SafetyResult
from lwd_fleet.control.watchdog import JOINT_STATES, StalenessWatchdog, WatchdogConfig
from lwd_protocol.robot_spec import CONTROL_RATE_HZ, JOINT_NAMES, LEFT_ARM_SLICE, RIGHT_ARM_SLICE

ARM_LEFT = 1  # = lwd_msgs/ControlMode.ARM_LEFT
ARM_RIGHT = 2  # = lwd_msgs/ControlMode.ARM_RIGHT


class Source(enum.IntEnum):
    """Who chose a tick's command; values = lwd_msgs/ExecutedAction.SOURCE_*."""

    POLICY = 0
    HUMAN = 1
    HOLD = 2


class Mode(enum.IntEnum):
    """Control mode; values = lwd_msgs/ControlMode constants."""

    POLICY = 0
    HUMAN = 1
    HOLD = 2
    ESTOP = 3


class HumanCommandError(ValueError):
    """A teleop message that cannot be a command; the message says which field is wrong."""


@dataclass(frozen=True)
class HumanCommand:
    """One parsed teleop command: joint indices + absolute positions or velocities (or neither)."""

    joints: np.ndarray  # int indices into the joint order
    position: np.ndarray | None = None
    velocity: np.ndarray | None = None

    @property
    def arms(self) -> int:
        mask = 0
        if np.any((self.joints >= LEFT_ARM_SLICE.start) & (self.joints < LEFT_ARM_SLICE.stop)):
            mask |= ARM_LEFT
        if np.any((self.joints >= RIGHT_ARM_SLICE.start) & (self.joints < RIGHT_ARM_SLICE.stop)):
            mask |= ARM_RIGHT
        return mask

    @classmethod
    def parse(
        cls,
        names: Sequence[str],
        position: Sequence[float],
        velocity: Sequence[float],
        joint_names: Sequence[str] = JOINT_NAMES,
    ) -> HumanCommand | None:
        """JointState fields -> command, or None for an explicit release (everything empty).

        Raises HumanCommandError for unknown/duplicate joints, length mismatches and non-finite
        values: such a message is dropped (it does not keep the human engaged either).
        """
        names = [str(n) for n in names]
        try:
            pos = np.asarray(position, dtype=np.float64).reshape(-1)
            vel = np.asarray(velocity, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise HumanCommandError(f"non-numeric position/velocity: {exc}") from exc
        if not names and pos.size == 0 and vel.size == 0:
            return None
        if not names:
            if pos.size != len(joint_names) or vel.size not in (0, len(joint_names)):
                raise HumanCommandError(
                    f"a command without joint names needs {len(joint_names)} positions, got {pos.size}"
                )
            names = list(joint_names)
        index = {n: i for i, n in enumerate(joint_names)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise HumanCommandError(f"unknown joint names {unknown}")
        if len(set(names)) != len(names):
            raise HumanCommandError(f"duplicate joint names in {names}")
        n = len(names)
        if pos.size not in (0, n) or vel.size not in (0, n):
            raise HumanCommandError(f"{n} joint names but {pos.size} positions and {vel.size} velocities")
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(vel))):
            raise HumanCommandError("non-finite position or velocity")
        joints = np.asarray([index[nm] for nm in names], dtype=np.int64)
        if pos.size:
            return cls(joints, position=pos)
        if vel.size:
            return cls(joints, velocity=vel)
        return cls(joints)


@dataclass(frozen=True)
class LoopConfig:
    safety: SafetyConfig
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    rate_hz: float = CONTROL_RATE_HZ
    joint_state_max_age_s: float = 0.1
    max_future_s: float = 0.05
    inference_grace_s: float = 0.0
    human_timeout_s: float = 0.25
    human_blend_steps: int = 10
    reseed_timeout_s: float = 0.25  # wall time to wait for a post-reset joint state before re-seeding anyway

    def __post_init__(self) -> None:
        if self.executor.action_dim != self.safety.num_joints:
            raise ValueError(f"executor action_dim {self.executor.action_dim} != {self.safety.num_joints} joints")
        for name in ("rate_hz", "joint_state_max_age_s", "human_timeout_s", "reseed_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        if self.human_blend_steps < 0:
            raise ValueError("human_blend_steps must be >= 0")


@dataclass(frozen=True)
class TickOutput:
    """What the node publishes for one tick (joint_command, ExecutedAction, ControlMode)."""

    tick: int
    episode_step: int
    command: np.ndarray  # safe joint targets, float64 (num_joints,)
    source: Source
    mode: Mode
    reason: str
    policy_version: int  # 0 unless source == POLICY
    human_arms: int
    intervention_active: bool
    intervention_count: int
    request_inference: bool  # node: capture this tick's observation, submit to the worker
    safety_flags: SafetyFlag
    safety_reason: str
    events: tuple[str, ...] = ()


@dataclass
class _Human:
    command: HumanCommand
    received_s: float  # wall (monotonic) time of the last valid command
    pose: np.ndarray | None = None  # human's commanded pose; None until the first HUMAN tick
    last_tick: int = 0
    blend_left: int = 0


class ControlLoop:
    """See module docstring. Not thread-safe: call from the control thread only."""

    def __init__(self, config: LoopConfig) -> None:
        self.cfg = config
        self.executor = ChunkExecutor(config.executor)
        self._safety: SafetyFilter | None = None
        self._measured: np.ndarray | None = None
        self._policy_version = 0
        self._policy_sources: dict[str, float] = {}
        self._stamps: dict[str, float] = {}
        self._watchdog = self._make_watchdog()
        self._policy_fresh = False  # True while the previous tick was a policy tick (no replan needed)
        self._human: _Human | None = None
        self._estop_reason: str | None = None
        self._reseed: tuple[float, float] | None = None  # (event stamp, wall time) of a pending re-seed
        self.in_episode = False
        self._episode_start_tick: int | None = None
        self._episode_reset = True  # next tick becomes episode step 0
        self.intervention_count = 0

    # ------------------------------------------------------------------ state
    @property
    def safety(self) -> SafetyFilter | None:
        return self._safety

    @property
    def policy_version(self) -> int:
        return self._policy_version

    @property
    def human_engaged(self) -> bool:
        return self._human is not None

    @property
    def estopped(self) -> bool:
        return self._estop_reason is not None

    def episode_step(self, tick: int) -> int:
        """Index of control tick ``tick`` within the current episode (ExecutedAction.step)."""
        start = self._episode_start_tick
        return tick - (start if start is not None else tick)

    # ----------------------------------------------------------------- inputs
    def joint_state(self, position: np.ndarray, stamp_s: float, wall_s: float) -> None:
        """A measured joint position (joint order), its header stamp (node clock) and receipt time."""
        pos = np.asarray(position, dtype=np.float64)
        if pos.shape != (self.cfg.safety.num_joints,) or not np.all(np.isfinite(pos)):
            return  # the node logs; a broken measurement is no evidence of freshness
        self._measured = pos
        self.source_stamp(JOINT_STATES, stamp_s)
        if self._safety is None:
            self._safety = SafetyFilter(self.cfg.safety, pos)
            if self._estop_reason is not None:
                self._safety.engage_estop(self._estop_reason)
        elif self._reseed is not None:
            event_stamp, event_wall = self._reseed
            if stamp_s >= event_stamp or wall_s - event_wall >= self.cfg.reseed_timeout_s:
                self._safety.reset(pos)
                self._reseed = None
                self._policy_fresh = False
                if self._human is not None:
                    self._human.pose = None

    def source_stamp(self, source: str, stamp_s: float) -> None:
        """Header stamp of any watched input (joint_states, sim/state, a camera)."""
        if math.isfinite(stamp_s) and stamp_s > self._stamps.get(source, -math.inf):
            self._stamps[source] = float(stamp_s)
        if source in self._watchdog.sources:
            self._watchdog.update(source, stamp_s)

    def set_policy(self, version: int, sources: Mapping[str, float]) -> None:
        """A policy (``version`` >= 1) now drives; ``sources`` = extra watched inputs -> max age (s)."""
        if version < 1:
            raise ValueError(f"policy version must be >= 1, got {version}")
        self._policy_version = int(version)
        self._policy_sources = dict(sources)
        self._watchdog = self._make_watchdog()
        self._policy_fresh = False  # the next policy tick replans from the commanded pose

    def clear_policy(self) -> None:
        self._policy_version = 0
        self._policy_sources = {}
        self._watchdog = self._make_watchdog()
        self._policy_fresh = False

    def submit_chunk(self, chunk: ActionChunk) -> bool:
        """Offer an inferred chunk; chunks of another policy version than the active one are refused."""
        if chunk.policy_version != self._policy_version or self._policy_version == 0:
            self.executor.last_rejection = (
                f"chunk from policy v{chunk.policy_version}, active is v{self._policy_version}"
            )
            return False
        return self.executor.submit(chunk)

    def human(self, command: HumanCommand | None, wall_s: float) -> None:
        """A valid teleop command (None = explicit release), received at monotonic ``wall_s``."""
        if command is None:
            self._human = None
            return
        if self._human is None:
            self._human = _Human(command, wall_s)
            self.intervention_count += 1
            return
        h = self._human
        if command.position is not None and h.command.position is None:
            h.blend_left = self.cfg.human_blend_steps  # velocity -> absolute targets: ramp again
        h.command, h.received_s = command, wall_s

    def engage_estop(self, reason: str = "e-stop") -> None:
        if self._estop_reason is None:
            self._estop_reason = reason or "e-stop"
        if self._safety is not None:
            self._safety.engage_estop(self._estop_reason)

    def release_estop(self) -> bool:
        was = self._estop_reason is not None
        self._estop_reason = None
        if self._safety is not None:
            self._safety.release_estop()
        return was

    def episode_started(self, stamp_s: float, wall_s: float) -> None:
        """STARTED: a new episode (the driver has reset the scene): re-seed from the next joint state."""
        self.in_episode = True
        self._episode_reset = True
        self.intervention_count = 1 if self._human is not None else 0
        self._reseed = (stamp_s if math.isfinite(stamp_s) else -math.inf, wall_s)

    def episode_ended(self) -> None:
        self.in_episode = False

    # ------------------------------------------------------------------- tick
    def tick(self, tick: int, now_s: float, wall_s: float, observation_problem: str = "") -> TickOutput | None:
        """One control period. ``now_s``: node clock (stamps' clock); ``wall_s``: monotonic.

        Returns None until the first joint state has seeded the safety filter (nothing to command).
        ``observation_problem``: why the policy's inputs cannot be assembled now ("" = fine).
        """
        safety = self._safety
        if safety is None:
            return None
        if self._episode_reset:
            self._episode_start_tick, self._episode_reset = tick, False
        events: list[str] = []
        request = False
        version = 0
        arms = 0
        policy_ran = False
        if self._estop_reason is not None:
            result, source, mode = safety.hold("e-stop"), Source.HOLD, Mode.ESTOP
            reason = f"e-stop: {self._estop_reason}"
        elif self._reseed is not None:
            result, source, mode = safety.hold("episode start"), Source.HOLD, Mode.HOLD
            reason = "episode start: waiting for a joint state after the reset"
        elif self._human is not None:
            result, source, mode, reason, arms = self._human_tick(tick, wall_s)
        elif self._policy_version == 0:
            result, source, mode, reason = safety.hold("no policy"), Source.HOLD, Mode.HOLD, "no policy loaded"
        else:
            policy_ran = True
            result, source, mode, reason, version, request = self._policy_tick(tick, now_s, observation_problem, events)
        if not policy_ran:  # the policy did not run this tick: its next tick replans from the commanded pose
            self._policy_fresh = False
            self._watchdog.report_inference(False, now_s)
        return TickOutput(
            tick=tick,
            episode_step=self.episode_step(tick),
            command=result.command,
            source=source,
            mode=mode,
            reason=reason,
            policy_version=version if source is Source.POLICY else 0,
            human_arms=arms,
            intervention_active=self._human is not None,
            intervention_count=self.intervention_count,
            request_inference=request,
            safety_flags=result.flags,
            safety_reason=result.reason,
            events=tuple(events),
        )

    # ---------------------------------------------------------------- helpers
    def _human_tick(self, tick: int, wall_s: float) -> tuple[SafetyResult, Source, Mode, str, int]:
        h = self._human
        assert h is not None and self._safety is not None
        safety = self._safety
        arms = h.command.arms
        age = wall_s - h.received_s
        if age > self.cfg.human_timeout_s:
            h.pose = None  # re-engaging starts again from the held pose
            return (
                safety.hold("teleop stale"),
                Source.HOLD,
                Mode.HOLD,
                f"teleop: human command stream stale {age:.2f} s (max {self.cfg.human_timeout_s:.2f} s); "
                "holding until release or a new command",
                arms,
            )
        last = safety.last_command
        if h.pose is None:  # first human tick (or after a hold): start from the commanded pose
            h.pose, h.last_tick = last.copy(), tick - 1
            h.blend_left = self.cfg.human_blend_steps
        cmd = h.command
        lo, hi = np.asarray(self.cfg.safety.lower), np.asarray(self.cfg.safety.upper)
        if cmd.velocity is not None:
            dt = (tick - h.last_tick) / self.cfg.rate_hz
            # integrate from the pose actually commanded: continuous, and no wind-up past a rate limit
            h.pose[cmd.joints] = np.clip(last[cmd.joints] + cmd.velocity * dt, lo[cmd.joints], hi[cmd.joints])
        elif cmd.position is not None:
            desired = np.clip(cmd.position, lo[cmd.joints], hi[cmd.joints])
            if h.blend_left > 0:  # close the remaining gap linearly over the remaining ramp ticks
                current = h.pose[cmd.joints]
                h.pose[cmd.joints] = current + (desired - current) / (h.blend_left + 1)
                h.blend_left -= 1
            else:
                h.pose[cmd.joints] = desired
        h.last_tick = tick
        result = safety.filter(h.pose)
        side = {ARM_LEFT: "left arm", ARM_RIGHT: "right arm", ARM_LEFT | ARM_RIGHT: "both arms"}.get(arms, "no arm")
        return result, Source.HUMAN, Mode.HUMAN, f"human takeover ({side})", arms

    def _policy_tick(
        self, tick: int, now_s: float, observation_problem: str, events: list[str]
    ) -> tuple[SafetyResult, Source, Mode, str, int, bool]:
        safety = self._safety
        assert safety is not None
        status = self._watchdog.check(now_s)
        stale = [(s, r) for s, r in zip(status.stale, status.reasons, strict=True) if s != "inference"]
        if stale or observation_problem:
            parts = list(dict.fromkeys([r for _, r in stale] + ([observation_problem] if observation_problem else [])))
            self._policy_fresh = False
            self._watchdog.report_inference(False, now_s)
            return safety.hold("watchdog"), Source.HOLD, Mode.HOLD, "watchdog: " + "; ".join(parts), 0, False
        if not self._policy_fresh:
            self.executor.reset(tick, safety.last_command)
            self._policy_fresh = True
            events.append(f"policy v{self._policy_version} (re)starts at tick {tick}: fresh chunk requested")
        step = self.executor.step(tick, current_pose=safety.last_command)
        events.extend(step.events)
        behind = step.status is ExecutorStatus.INFERENCE_BEHIND
        self._watchdog.report_inference(behind, now_s)
        if step.action is None:
            if behind:
                wd = self._watchdog.check(now_s)
                reasons = [r for s, r in zip(wd.stale, wd.reasons, strict=True) if s == "inference"]
                reason = "watchdog: " + (reasons[0] if reasons else step.reason)
                return safety.hold("inference behind"), Source.HOLD, Mode.HOLD, reason, 0, step.request_inference
            return (
                safety.hold("waiting for chunk"),
                Source.HOLD,
                Mode.POLICY,
                "waiting for the first action chunk",
                0,
                step.request_inference,
            )
        result = safety.filter(step.action)
        return result, Source.POLICY, Mode.POLICY, "", step.policy_version, step.request_inference

    def _make_watchdog(self) -> StalenessWatchdog:
        ages = {JOINT_STATES: self.cfg.joint_state_max_age_s, **self._policy_sources}
        wd = StalenessWatchdog(
            WatchdogConfig(
                max_age_s=ages, max_future_s=self.cfg.max_future_s, inference_grace_s=self.cfg.inference_grace_s
            )
        )
        for source in ages:
            if source in self._stamps:
                wd.update(source, self._stamps[source])
        return wd
