"""Joy -> takeover mapping (pure) and the headless SDL pad reader against an SDL virtual controller."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lwd_fleet.teleop.mapping import (
    ARM_LEFT,
    ARM_RIGHT,
    OUTCOME_ABORTED,
    OUTCOME_FAILURE,
    OUTCOME_SUCCESS,
    JoyMapping,
    TeleopMapper,
)
from lwd_msgs.msg import ControlMode, EpisodeEvent

LB, RB, Y, START, A_BTN, B_BTN, X_BTN = 9, 10, 3, 6, 0, 1, 2


def pad(buttons: tuple[int, ...] = (), **axes: float) -> tuple[list[float], list[int]]:
    values = [0.0] * 6
    for key, value in axes.items():
        values[int(key[1:])] = value
    return values, [1 if i in buttons else 0 for i in range(21)]


def test_constants_match_the_messages() -> None:
    assert (ARM_LEFT, ARM_RIGHT) == (ControlMode.ARM_LEFT, ControlMode.ARM_RIGHT)
    assert (OUTCOME_SUCCESS, OUTCOME_FAILURE, OUTCOME_ABORTED) == (
        EpisodeEvent.OUTCOME_SUCCESS,
        EpisodeEvent.OUTCOME_FAILURE,
        EpisodeEvent.OUTCOME_ABORTED,
    )


def test_deadman_selects_arms_and_sticks_drive_the_active_group() -> None:
    m = TeleopMapper(JoyMapping(deadzone=0.1, joint_speed=0.5, gripper_speed=0.04))
    idle = m.update(*pad(a0=1.0))
    assert idle.arms == 0 and idle.names == () and not idle.release  # sticks do nothing without a deadman
    out = m.update(*pad((LB,), a0=0.55, a1=-1.0, a3=0.05, a5=-0.5))
    assert out.arms == ARM_LEFT
    assert out.names == ("left_joint1", "left_joint2", "left_joint3", "left_joint4", "left_gripper")
    # smooth deadzone: (|x| - dz) / (1 - dz) * speed; inside the deadzone exactly 0
    np.testing.assert_allclose(out.velocity, [0.5 * 0.45 / 0.9, -0.5, 0.0, 0.0, 0.04 * 0.5], atol=1e-12)
    both = m.update(*pad((LB, RB), a2=1.0, a4=-1.0))
    assert both.arms == ARM_LEFT | ARM_RIGHT and len(both.names) == 10
    np.testing.assert_allclose(both.velocity[:5], both.velocity[5:])
    assert both.velocity[4] == pytest.approx(-0.04)  # LT closes
    released = m.update(*pad())
    assert released.release and released.arms == 0
    assert not m.update(*pad()).release  # only once


def test_group_toggles_on_the_press_edge() -> None:
    m = TeleopMapper()
    m.update(*pad((RB, Y)))
    assert m.group == 1
    out = m.update(*pad((RB, Y), a0=1.0, a3=1.0))  # still held: no second toggle
    assert m.group == 1 and out.names == ("right_joint5", "right_joint6", "right_joint7", "right_gripper")
    np.testing.assert_allclose(out.velocity, [0.5, 0.0, 0.0, 0.0])  # 4th stick axis unused by a 3-joint group
    m.update(*pad((RB,)))
    m.update(*pad((RB, Y)))
    assert m.group == 0


@pytest.mark.parametrize(
    ("button", "outcome"), [(A_BTN, OUTCOME_SUCCESS), (B_BTN, OUTCOME_FAILURE), (X_BTN, OUTCOME_ABORTED)]
)
def test_outcome_chords_fire_once_and_only_with_the_modifier(button: int, outcome: int) -> None:
    m = TeleopMapper()
    assert m.update(*pad((button,))).outcome is None
    m.update(*pad())
    assert m.update(*pad((START,))).outcome is None
    assert m.update(*pad((START, button))).outcome == outcome
    assert m.update(*pad((START, button))).outcome is None


def test_missing_and_broken_axes_read_as_centred() -> None:
    m = TeleopMapper()
    out = m.update([math.nan, math.inf], [0] * 9 + [1])  # short axes, NaN, inf; LB pressed
    np.testing.assert_array_equal(out.velocity[1:], 0.0)
    assert out.velocity[0] == 0.0 and out.arms == ARM_LEFT


def test_mapping_validation() -> None:
    with pytest.raises(ValueError, match="unknown arm joints"):
        JoyMapping(joint_groups=(("joint1", "elbow"),))
    with pytest.raises(ValueError, match="differ in length"):
        JoyMapping(stick_axes=(0, 1), stick_signs=(1.0,))
    with pytest.raises(ValueError, match="one per stick axis"):
        JoyMapping(stick_axes=(0,), stick_signs=(1.0,))


def test_pygame_reader_sees_a_virtual_pad_in_game_controller_convention() -> None:
    pytest.importorskip("pygame")
    from lwd_fleet.teleop.gamepad import PygameGamepad
    from lwd_fleet.teleop.virtual_pad import VirtualGamepad

    reader = PygameGamepad(0)
    assert reader.read() is None  # nothing plugged in yet
    vpad = VirtualGamepad()
    try:
        state = reader.read()
        assert state is not None and state.layout == "game_controller"
        assert any("connected" in e for e in reader.events)
        vpad.set_axis(0, -1.0)  # SDL: full left
        vpad.set_axis(1, 0.5)  # SDL: half down
        vpad.set_axis(4, 1.0)  # left trigger fully pressed
        vpad.set_button(LB, True)
        state = reader.read()
        assert state.axes[0] == pytest.approx(1.0) and state.axes[1] == pytest.approx(-0.5, abs=1e-4)
        assert state.axes[4] == pytest.approx(-1.0) and state.axes[5] == pytest.approx(0.0)
        assert state.buttons[LB] == 1 and sum(state.buttons) == 1
        out = TeleopMapper().update(state.axes, state.buttons)
        assert out.arms == ARM_LEFT and out.velocity[0] == pytest.approx(0.5) and out.velocity[-1] < 0
    finally:
        vpad.close()
    assert reader.read() is None and not reader.connected
    reader.close()
