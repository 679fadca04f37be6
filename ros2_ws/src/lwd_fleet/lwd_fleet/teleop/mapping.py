"""JoyMapping: gamepad axes/buttons (sensor_msgs/Joy) -> joint-velocity takeover commands and outcome marks.

Default layout = the ROS 2 ``joy`` package's ``game_controller_node`` (SDL GameController order,
axes inverted so stick left/up = +1, triggers 0 at rest and -1 fully pressed); the teleop node's
own pygame reader publishes Joy in exactly this convention. Every index is a parameter.

  =====================  ==============================================================
  LB (button 9) held     take over the LEFT arm  (deadman; release hands back to policy)
  RB (button 10) held    take over the RIGHT arm (both held: both arms, same deltas)
  left stick X / Y       velocity of joint A / B of the active joint group
  right stick X / Y      velocity of joint C / D of the active joint group
  Y (button 3) press     toggle joint group: proximal (joint1-4) <-> distal (joint5-7)
  LT / RT (axes 4 / 5)   close / open the selected arm's gripper (analog)
  START (6) + A (0)      mark the episode SUCCESS   (edge-triggered chord)
  START (6) + B (1)      mark the episode FAILURE
  START (6) + X (2)      mark the episode ABORTED
  =====================  ==============================================================

Joint-space deltas: a full stick deflection moves a joint at ``joint_speed`` rad/s (after a
``deadzone`` with a smooth ramp), a fully pressed trigger the gripper at ``gripper_speed`` m/s.
The controller integrates these velocities from the pose it is commanding, so a takeover starts
exactly where the arm is (bumpless). Pure logic: no pygame, no ROS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lwd_protocol.robot_spec import ARM_JOINTS

ARM_LEFT = 1  # = lwd_msgs/ControlMode.ARM_LEFT
ARM_RIGHT = 2  # = lwd_msgs/ControlMode.ARM_RIGHT
OUTCOME_SUCCESS = 1  # = lwd_msgs/EpisodeEvent.OUTCOME_SUCCESS
OUTCOME_FAILURE = 2  # = lwd_msgs/EpisodeEvent.OUTCOME_FAILURE
OUTCOME_ABORTED = 4  # = lwd_msgs/EpisodeEvent.OUTCOME_ABORTED


@dataclass(frozen=True)
class JoyMapping:
    deadman_left: int = 9
    deadman_right: int = 10
    stick_axes: tuple[int, ...] = (0, 1, 2, 3)
    stick_signs: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    joint_groups: tuple[tuple[str, ...], ...] = (
        ("joint1", "joint2", "joint3", "joint4"),
        ("joint5", "joint6", "joint7"),
    )
    group_button: int = 3
    gripper_close_axis: int = 4
    gripper_open_axis: int = 5
    outcome_modifier: int = 6
    success_button: int = 0
    failure_button: int = 1
    abort_button: int = 2
    deadzone: float = 0.1
    joint_speed: float = 0.5  # rad/s at full deflection
    gripper_speed: float = 0.04  # m/s at a fully pressed trigger

    def __post_init__(self) -> None:
        if len(self.stick_axes) != len(self.stick_signs):
            raise ValueError(f"stick_axes {self.stick_axes} and stick_signs {self.stick_signs} differ in length")
        if not self.joint_groups:
            raise ValueError("joint_groups needs at least one group")
        for group in self.joint_groups:
            if not 1 <= len(group) <= len(self.stick_axes):
                raise ValueError(f"joint group {group} needs 1..{len(self.stick_axes)} joints (one per stick axis)")
            unknown = [j for j in group if j not in ARM_JOINTS]
            if unknown:
                raise ValueError(f"joint group {group} names unknown arm joints {unknown}; use {ARM_JOINTS}")
        indices = (
            self.deadman_left,
            self.deadman_right,
            self.group_button,
            self.outcome_modifier,
            self.success_button,
            self.failure_button,
            self.abort_button,
            self.gripper_close_axis,
            self.gripper_open_axis,
            *self.stick_axes,
        )
        if any(i < 0 for i in indices):
            raise ValueError(f"button/axis indices must be >= 0, got {indices}")
        if not 0 <= self.deadzone < 1:
            raise ValueError(f"deadzone must be in [0, 1), got {self.deadzone}")
        if not (self.joint_speed > 0 and self.gripper_speed > 0):
            raise ValueError("joint_speed and gripper_speed must be > 0")


@dataclass(frozen=True)
class TeleopOutput:
    """One mapped pad state. ``arms == 0``: not engaged (publish nothing unless ``release``)."""

    arms: int
    names: tuple[str, ...]
    velocity: np.ndarray
    release: bool  # the deadman was just let go: publish an explicit release once
    outcome: int | None  # EpisodeEvent outcome requested on this update (press edge of a chord)
    group: int


@dataclass
class TeleopMapper:
    mapping: JoyMapping = field(default_factory=JoyMapping)
    group: int = 0
    engaged_arms: int = 0
    _pressed: frozenset[int] = frozenset()

    def update(self, axes: Sequence[float], buttons: Sequence[int]) -> TeleopOutput:
        m = self.mapping
        pressed = frozenset(i for i, b in enumerate(buttons) if b)
        edges = pressed - self._pressed
        self._pressed = pressed

        outcome = None
        modifier = m.outcome_modifier in pressed
        if modifier:
            for button, value in (
                (m.success_button, OUTCOME_SUCCESS),
                (m.failure_button, OUTCOME_FAILURE),
                (m.abort_button, OUTCOME_ABORTED),
            ):
                if button in edges:
                    outcome = value
                    break
        if m.group_button in edges and not modifier:
            self.group = (self.group + 1) % len(m.joint_groups)

        arms = (ARM_LEFT if m.deadman_left in pressed else 0) | (ARM_RIGHT if m.deadman_right in pressed else 0)
        release = self.engaged_arms != 0 and arms == 0
        self.engaged_arms = arms
        names: list[str] = []
        velocity: list[float] = []
        if arms:
            group = m.joint_groups[self.group]
            joint_v = [
                m.joint_speed * sign * self._shaped(axes, axis)
                for axis, sign in zip(m.stick_axes, m.stick_signs, strict=True)
            ][: len(group)]
            grip_v = m.gripper_speed * (_trigger(axes, m.gripper_open_axis) - _trigger(axes, m.gripper_close_axis))
            for side, bit in (("left", ARM_LEFT), ("right", ARM_RIGHT)):
                if arms & bit:
                    names += [f"{side}_{j}" for j in group] + [f"{side}_gripper"]
                    velocity += [*joint_v, grip_v]
        return TeleopOutput(arms, tuple(names), np.asarray(velocity, np.float64), release, outcome, self.group)

    def _shaped(self, axes: Sequence[float], index: int) -> float:
        x = _axis(axes, index)
        dz = self.mapping.deadzone
        if abs(x) <= dz:
            return 0.0
        return float(np.sign(x) * (abs(x) - dz) / (1.0 - dz))


def _axis(axes: Sequence[float], index: int) -> float:
    """Axis value clipped to [-1, 1]; a missing axis or a non-finite value reads as 0."""
    if index >= len(axes):
        return 0.0
    x = float(axes[index])
    return float(np.clip(x, -1.0, 1.0)) if np.isfinite(x) else 0.0


def _trigger(axes: Sequence[float], index: int) -> float:
    """Trigger press in [0, 1]: game_controller_node reports 0 at rest and -1 fully pressed."""
    return max(0.0, -_axis(axes, index))
