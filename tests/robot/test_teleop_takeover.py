"""Joystick takeover end to end: an SDL virtual game controller -> the teleop node (pygame, headless) ->
teleop/joint_target over DDS -> the controller process. The switch is bumpless both ways (no jump in
joint_command when the human takes over or hands back), the policy is suspended while the deadman is
held, ExecutedAction/ControlMode record HUMAN, and START+A marks the episode a success."""

from __future__ import annotations

import numpy as np
import pytest
from test_controller_harness import RobotProbe, assert_safe, controller_params, running_controller

from lwd_protocol.robot_spec import JOINT_NAMES

pytestmark = pytest.mark.ros
pytest.importorskip("pygame")
pytest.importorskip("onnx", reason="the `onnx` package builds the test policy")
from lwd_fleet.inference.synthetic import drift_policy  # noqa: E402

POLICY, HUMAN, HOLD = 0, 1, 2
ARM_LEFT = 1
LB, START, A_BUTTON = 9, 6, 0
JOINT_SPEED = 2.0  # rad/s at full deflection: a short takeover moves the arm far from the old plan
WIDE_STEP = 0.5  # rad/tick: the safety rate limit must not be what hides a jump


def test_joystick_takeover_is_bumpless_both_ways(ros_env, tmp_path) -> None:
    import rclpy
    from rclpy.parameter import Parameter

    from lwd_fleet.nodes.teleop_node import TeleopNode
    from lwd_fleet.teleop.virtual_pad import VirtualGamepad
    from lwd_msgs.msg import EpisodeEvent

    drift = np.zeros(len(JOINT_NAMES))
    drift[2] = 0.003  # the policy keeps moving left_joint3
    policy_dir = drift_policy(1, drift).write(tmp_path / "v000001")
    params = controller_params(policy_dir=str(policy_dir), max_step_arm=WIDE_STEP)

    rclpy.init()
    probe = RobotProbe()
    vpad = VirtualGamepad()
    teleop = TeleopNode(
        parameter_overrides=[Parameter("robot_id", value="robot_01"), Parameter("joint_speed", value=JOINT_SPEED)]
    )
    probe.executor.add_node(teleop)
    try:
        with running_controller(ros_env, params, tmp_path) as ctl:

            def policy_running(n: int) -> bool:
                recent = probe.executed[-n:]
                return len(recent) == n and all(s.value.source == POLICY for s in recent)

            assert probe.spin_until(lambda: policy_running(20), 60, ctl, "policy control"), ctl.log()

            vpad.set_axis(0, -1.0)  # left stick fully left: + on left_joint1 (ROS convention: left = +)
            vpad.set_button(LB, True)  # deadman: take over the left arm
            assert probe.spin_until(lambda: probe.executed[-1].value.source == HUMAN, 10, ctl, "HUMAN")
            probe.spin_for(0.25)  # shorter than a chunk: resuming the old plan would jump back ~0.5 rad
            mode = probe.last_mode()
            assert mode.mode == HUMAN and mode.human_arms == ARM_LEFT and mode.intervention_active
            assert mode.intervention_count == 1

            vpad.set_axis(0, 0.0)  # stop moving, then let go (the measured state catches up meanwhile)
            probe.spin_for(0.2)
            vpad.set_button(LB, False)  # let go: explicit release, the policy replans
            assert probe.spin_until(lambda: policy_running(30), 20, ctl, "policy after the release")
            assert not probe.last_mode().intervention_active

            vpad.set_button(START, True)
            vpad.set_button(A_BUTTON, True)
            assert probe.spin_until(lambda: any(s.value.event == EpisodeEvent.ENDED for s in probe.events), 10)
            vpad.set_button(A_BUTTON, False)
            vpad.set_button(START, False)
            probe.spin_for(0.2)
    finally:
        probe.executor.remove_node(teleop)
        teleop.close()
        teleop.destroy_node()
        vpad.close()
        probe.close()
        rclpy.shutdown()

    sources = np.array([s.value.source for s in probe.executed])
    pos = np.array([np.asarray(s.value.position, np.float64) for s in probe.executed])
    human = np.flatnonzero(sources == HUMAN)
    assert len(human) >= 6, "the takeover lasted about 0.3 s: ~10 HUMAN ticks"
    k, last = human[0], human[-1]
    assert np.all(sources[k : last + 1] == HUMAN)
    assert all(s.value.policy_version == 0 for s in probe.executed[k : last + 1])

    # takeover: the human starts from the commanded pose and moves left_joint1 at JOINT_SPEED
    step_at_switch = np.abs(pos[k] - pos[k - 1])
    assert step_at_switch.max() <= JOINT_SPEED / 30 + 1e-6, step_at_switch
    during = pos[k : last + 1]
    assert np.all(np.diff(during[:, 0]) >= -1e-9) and during[-1, 0] - pos[k - 1, 0] > 0.3
    np.testing.assert_array_equal(
        during[:, 1:], np.repeat(pos[k - 1 : k, 1:], len(during), axis=0).astype(np.float32).astype(np.float64)
    )  # policy suspended: nothing else moves

    # hand-back: fresh chunk from the current state, ramped in from the commanded pose
    after = pos[last:]
    assert np.all(sources[last + 1 :] != HUMAN)
    assert np.abs(np.diff(after, axis=0)).max() <= 0.02, "jump when the policy took back over"
    assert abs(after[-1, 0] - pos[last, 0]) < 0.02  # no return to the pre-takeover plan (>0.3 rad away)
    assert after[-1, 2] > pos[last, 2]  # the policy is driving again

    # the whole run: never a step beyond what the motion itself explains, never out of limits
    assert np.abs(np.diff(pos, axis=0)).max() <= 3 * JOINT_SPEED / 30  # (a missed tick integrates 2 periods)
    assert_safe(probe.command_array(), max_step=np.full(len(JOINT_NAMES), WIDE_STEP))

    ended = [s.value for s in probe.events if s.value.event == EpisodeEvent.ENDED]
    assert len(ended) == 1 and ended[0].outcome == EpisodeEvent.OUTCOME_SUCCESS and ended[0].robot_id == "robot_01"


def test_teleop_consumes_joy_from_a_standard_joy_node(ros_env) -> None:
    """joystick_source=topic: Joy messages (as ROS 2 game_controller_node publishes them) drive the same
    mapping; a lost Joy stream stops the commands without a release (the controller then holds)."""
    import time

    import rclpy
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState, Joy

    from lwd_fleet.control.topics import TELEOP_JOINT_TARGET
    from lwd_fleet.nodes.teleop_node import TeleopNode
    from lwd_msgs.msg import EpisodeEvent
    from lwd_protocol.names import RosTopics

    rclpy.init()
    probe = RobotProbe()
    teleop = TeleopNode(
        parameter_overrides=[Parameter("joystick_source", value="topic"), Parameter("joy_timeout_s", value=0.3)]
    )
    probe.executor.add_node(teleop)
    targets: list[tuple[float, JointState]] = []
    probe.node.create_subscription(JointState, TELEOP_JOINT_TARGET, lambda m: targets.append((time.monotonic(), m)), 10)
    joy_pub = probe.node.create_publisher(Joy, RosTopics.JOY, 10)
    try:
        assert probe.spin_until(lambda: joy_pub.get_subscription_count() > 0, 10)

        def joy(buttons: tuple[int, ...], right_x: float = 0.0) -> Joy:
            axes = [0.0, 0.0, right_x, 0.0, 0.0, 0.0]
            return Joy(axes=axes, buttons=[1 if i in buttons else 0 for i in range(21)])

        def send_for(msg: Joy, seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                joy_pub.publish(msg)
                probe.spin_for(0.05)

        send_for(joy((10,), right_x=-1.0), 0.4)  # RB + right stick X: right arm, joint C of group 0
        driving = [m for _, m in targets if m.name]
        assert driving and list(driving[-1].name) == [
            "right_joint1",
            "right_joint2",
            "right_joint3",
            "right_joint4",
            "right_gripper",
        ]
        np.testing.assert_allclose(driving[-1].velocity, [0.0, 0.0, -0.5, 0.0, 0.0])  # default 0.5 rad/s
        send_for(joy(()), 0.2)  # deadman released
        assert any(not m.name and not m.velocity for _, m in targets)  # the explicit release
        send_for(joy((6, 1)), 0.2)  # START + B
        assert probe.spin_until(lambda: any(s.value.event == EpisodeEvent.ENDED for s in probe.events), 5)
        assert probe.events[-1].value.outcome == EpisodeEvent.OUTCOME_FAILURE

        send_for(joy((9,)), 0.3)  # LB held ... then the Joy stream dies
        lost_at = time.monotonic()
        probe.spin_for(0.8)
        after = [m for t, m in targets if t > lost_at + 0.5]
        assert after == []  # no commands and no release: the controller will hold the arm
    finally:
        probe.executor.remove_node(teleop)
        teleop.close()
        teleop.destroy_node()
        probe.close()
        rclpy.shutdown()
