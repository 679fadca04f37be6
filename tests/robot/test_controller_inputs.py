"""The controller subscribes to exactly the inputs its policy consumes, over real DDS: sim/state only for a
"sim_state" policy, the policy's cameras only for an image policy, and a missing or stalled input holds
the arm with a reason naming it."""

from __future__ import annotations

import numpy as np
import pytest
from test_controller_harness import (
    LOWER,
    START_POSE,
    UPPER,
    RobotProbe,
    assert_safe,
    controller_params,
    running_controller,
)

from lwd_protocol.manifest import ObservationSpec
from lwd_protocol.names import RosTopics
from lwd_protocol.robot_spec import CAMERA_NAMES

pytestmark = pytest.mark.ros
pytest.importorskip("onnx", reason="the `onnx` package builds the test policies")
from lwd_fleet.inference.synthetic import target_policy  # noqa: E402

POLICY, HOLD = 0, 2


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


def _subscribers(probe: RobotProbe) -> dict[str, int]:
    topics = [RosTopics.SIM_STATE, *(RosTopics.camera_image(c) for c in CAMERA_NAMES)]
    return {t: probe.node.count_subscribers(t) for t in topics}


def _mode_is(probe: RobotProbe, mode: int, needle: str = "") -> bool:
    m = probe.last_mode()
    return m is not None and m.mode == mode and needle in m.reason


def test_sim_state_policy_reads_sim_state_and_no_camera(ros_env, probe, tmp_path) -> None:
    target = np.clip(START_POSE + 0.05, LOWER, UPPER)
    obs = ObservationSpec(state_source="sim_state", state_dim=6)
    folder = target_policy(1, target, observation=obs).write(tmp_path / "v000001")
    with running_controller(ros_env, controller_params(policy_dir=str(folder)), tmp_path) as ctl:
        assert probe.spin_until(lambda: _mode_is(probe, HOLD, "sim/state"), 60, ctl, "HOLD on sim/state"), ctl.log()
        assert probe.last_mode().reason == "watchdog: sim/state never received"
        subs = _subscribers(probe)
        assert subs[RosTopics.SIM_STATE] == 1 and all(subs[RosTopics.camera_image(c)] == 0 for c in CAMERA_NAMES)
        probe.sim_state = np.arange(6, dtype=np.float64)  # float32[] on the wire
        assert probe.spin_until(lambda: probe.last_command_near(target, 1e-6), 30, ctl, "target")
        assert probe.executed[-1].value.source == POLICY
        probe.sim_state = None  # the sim stops publishing its state
        assert probe.spin_until(lambda: _mode_is(probe, HOLD, "sim/state stale"), 10, ctl, "HOLD on stale state")
    assert_safe(probe.command_array())


def test_image_policy_reads_its_cameras_and_holds_when_one_stalls(ros_env, probe, tmp_path) -> None:
    target = np.clip(START_POSE - 0.05, LOWER, UPPER)
    cams = ["head", "left_wrist"]
    obs = ObservationSpec(state_source="joint_positions", state_dim=16, cameras=cams, image_size=[12, 16])
    folder = target_policy(1, target, observation=obs, w_image=np.full(30 * 16, 0.01)).write(tmp_path / "v000001")
    with running_controller(ros_env, controller_params(policy_dir=str(folder)), tmp_path) as ctl:
        assert probe.spin_until(lambda: _mode_is(probe, HOLD, "camera"), 60, ctl, "HOLD on cameras"), ctl.log()
        subs = _subscribers(probe)
        assert subs[RosTopics.SIM_STATE] == 0 and subs[RosTopics.camera_image("right_wrist")] == 0
        assert subs[RosTopics.camera_image("head")] == 1 and subs[RosTopics.camera_image("left_wrist")] == 1
        rng = np.random.default_rng(0)
        probe.images = {c: rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for c in cams}
        image_term = np.mean(np.stack(list(probe.images.values()))) / 255 * 0.01  # w_image * mean pixel
        want = np.clip(target + image_term, LOWER, UPPER)
        assert probe.spin_until(lambda: probe.last_command_near(want, 1e-5), 30, ctl, "target")
        del probe.images["head"]
        assert probe.spin_until(lambda: _mode_is(probe, HOLD, "head camera stale"), 10, ctl, "HOLD on head")
        held = probe.commands[-1].value
        probe.spin_for(0.3)
        assert np.array_equal(probe.commands[-1].value, held)
    assert_safe(probe.command_array())
