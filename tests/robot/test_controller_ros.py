"""The controller node over real DDS: it follows a policy chunk inside the joint limits, holds on stale
observations, latches the e-stop until an explicit release, holds with no policy, and no garbage
teleop command (NaN, huge, wrong length, unknown joints) ever yields an out-of-limit joint_command."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_controller_harness import (
    LOWER,
    START_POSE,
    UPPER,
    RobotProbe,
    assert_safe,
    controller_params,
    running_controller,
)

from lwd_protocol.robot_spec import JOINT_NAMES

pytestmark = pytest.mark.ros
pytest.importorskip("onnx", reason="the `onnx` package builds the test policies")
from lwd_fleet.inference.synthetic import drift_policy, target_policy  # noqa: E402

POLICY, HUMAN, HOLD, ESTOP = 0, 1, 2, 3
TARGET = START_POSE.copy()
TARGET[0], TARGET[1], TARGET[7], TARGET[9] = 0.5, 3.0, 0.1, -2.0  # three of them beyond the limits
DRIFT = np.zeros(len(JOINT_NAMES))
DRIFT[2] = 0.004  # left_joint3 creeps up by 4 mrad per chunk row


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("policies")
    return {
        "target": target_policy(1, TARGET, action_mean=0.2, action_std=0.5).write(root / "target"),
        "drift": drift_policy(1, DRIFT, state_mean=0.1, state_std=0.3).write(root / "drift"),
    }


@pytest.fixture
def probe(ros_env):
    import rclpy

    rclpy.init()
    robot = RobotProbe()
    try:
        yield robot
    finally:
        robot.close()
        rclpy.shutdown()


def _policy_running(probe: RobotProbe, version: int = 1, n: int = 10) -> bool:
    recent = probe.executed[-n:]
    return len(recent) == n and all(s.value.source == POLICY and s.value.policy_version == version for s in recent)


def test_follows_the_policy_chunk_and_clamps_to_the_limits(ros_env, probe, policies, tmp_path) -> None:
    expected = np.clip(TARGET, LOWER, UPPER)
    probe.publish_states = False  # no state before the controller's endpoints are matched (see below)
    with running_controller(ros_env, controller_params(policy_dir=str(policies["target"])), tmp_path) as ctl:
        assert probe.connect_before_first_state(ctl), ctl.log()

        def reached() -> bool:  # the policy computes in float32: equal up to its rounding
            return probe.last_command_near(expected, 1e-6)

        assert probe.spin_until(reached, 60, ctl, "the command to reach the policy target"), ctl.log()
        probe.spin_for(0.5)
    commands = probe.command_array()
    assert_safe(commands)
    np.testing.assert_array_equal(commands[0], START_POSE)  # starts where the arm is
    assert _policy_running(probe)
    last = probe.executed[-1].value
    np.testing.assert_allclose(np.asarray(last.position), expected, rtol=0, atol=1e-6)
    chunk = probe.chunks[-1].value
    assert (chunk.policy_version, chunk.horizon, chunk.action_dim) == (1, 30, 16)
    # the chunk is the policy's de-normalised output, before the safety clamps
    np.testing.assert_allclose(np.asarray(chunk.data).reshape(30, 16), np.tile(TARGET, (30, 1)), atol=1e-5)
    status = probe.last_status()
    assert (status.active_version, status.engine_backend, status.robot_id) == (1, "onnxruntime-cpu", "robot_01")
    assert probe.last_mode().mode == POLICY


def test_watchdog_holds_on_stale_joint_states_then_resumes(ros_env, probe, policies, tmp_path) -> None:
    with running_controller(ros_env, controller_params(policy_dir=str(policies["drift"])), tmp_path) as ctl:
        assert probe.spin_until(lambda: _policy_running(probe, n=20), 60, ctl, "policy control"), ctl.log()
        probe.publish_states = False  # the driver goes silent
        assert probe.spin_until(lambda: probe.last_mode().mode == HOLD, 10, ctl, "watchdog HOLD")
        mode = probe.modes[-1]
        assert "joint_states stale" in mode.value.reason and mode.value.reason.startswith("watchdog: ")
        probe.spin_for(1.0)
        held = probe.command_array(since=mode.wall + 0.2)
        assert len(held) > 10 and np.all(held == held[0])  # exactly the same pose, tick after tick
        assert all(s.value.source == HOLD for s in probe.executed if s.wall >= mode.wall + 0.2)
        resume = probe.commands[-1].wall
        probe.publish_states = True
        assert probe.spin_until(lambda: _policy_running(probe, n=20), 20, ctl, "policy control after the hold")
        moved = probe.command_array(since=resume)
        assert moved[-1][2] > held[0][2]  # the policy drives again from where it held
    assert_safe(probe.command_array())


def test_estop_latches_until_the_release_service(ros_env, probe, policies, tmp_path) -> None:
    from std_msgs.msg import Bool
    from std_srvs.srv import Trigger

    from lwd_fleet.control.topics import RELEASE_ESTOP

    with running_controller(ros_env, controller_params(policy_dir=str(policies["drift"])), tmp_path) as ctl:
        assert probe.spin_until(lambda: _policy_running(probe, n=20), 60, ctl, "policy control"), ctl.log()
        probe.estop_pub.publish(Bool(data=True))
        assert probe.spin_until(lambda: probe.last_mode().mode == ESTOP, 10, ctl, "ESTOP mode")
        probe.estop_pub.publish(Bool(data=False))  # letting go of the button does not release the latch
        t_estop = probe.modes[-1].wall
        probe.spin_for(1.0)
        assert probe.last_mode().mode == ESTOP
        held = probe.command_array(since=t_estop + 0.2)
        assert len(held) > 10 and np.all(held == held[0])
        client = probe.node.create_client(Trigger, RELEASE_ESTOP)
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(Trigger.Request())
        assert probe.spin_until(future.done, 10, ctl, "release_estop reply")
        assert future.result().success
        assert probe.spin_until(lambda: _policy_running(probe, n=10), 20, ctl, "policy after release")
    assert_safe(probe.command_array())


def test_without_a_policy_the_arm_holds(ros_env, probe, tmp_path) -> None:
    with running_controller(ros_env, controller_params(), tmp_path) as ctl:
        assert probe.spin_until(lambda: len(probe.executed) > 15, 60, ctl, "executed actions"), ctl.log()
        assert probe.last_mode().mode == HOLD and probe.last_mode().reason == "no policy loaded"
        assert all(s.value.source == HOLD and s.value.policy_version == 0 for s in probe.executed)
        assert np.all(probe.command_array() == START_POSE)
        assert probe.last_status().active_version == 0


names = st.lists(st.sampled_from((*JOINT_NAMES, "elbow", "")), max_size=18)
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e300, -1e300, 5.0, -5.0]))


@st.composite
def garbage(draw: st.DrawFn) -> list[tuple[list[str], list[float], list[float]]]:
    msgs = []
    for _ in range(draw(st.integers(1, 3))):
        n = draw(names)
        size = draw(st.sampled_from([len(n), len(n), len(JOINT_NAMES), len(n) + 1]))
        values = draw(st.lists(numbers, min_size=size, max_size=size))
        msgs.append((n, values, []) if draw(st.booleans()) else (n, [], values))
    return msgs


def test_garbage_teleop_commands_never_leave_the_limits(ros_env, probe, policies, tmp_path) -> None:
    from sensor_msgs.msg import JointState

    with running_controller(ros_env, controller_params(policy_dir=str(policies["drift"])), tmp_path) as ctl:
        assert probe.spin_until(lambda: _policy_running(probe), 60, ctl, "policy control"), ctl.log()

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(garbage())
        @example([([], [math.nan] * 16, [])])
        @example([(list(JOINT_NAMES), [1e300] * 16, [])])
        @example([(["left_joint1"], [], [1e300])])
        @example([(["left_joint1", "left_joint2"], [0.3], [])])
        def send(msgs: list[tuple[list[str], list[float], list[float]]]) -> None:
            for name, position, velocity in msgs:
                probe.human_pub.publish(JointState(name=name, position=position, velocity=velocity))
            probe.spin_for(0.05)

        send()
        huge = JointState(name=list(JOINT_NAMES), position=[1e300] * len(JOINT_NAMES))
        assert probe.spin_until(
            lambda: probe.human_pub.publish(huge) or np.array_equal(probe.commands[-1].value, UPPER), 20, ctl, "clamp"
        )
        probe.human_pub.publish(JointState())  # release
        probe.spin_for(0.5)
        assert ctl.alive(), ctl.log()
    assert_safe(probe.command_array())
    assert any(s.value.source == HUMAN for s in probe.executed)  # valid (if absurd) commands did drive the arm
