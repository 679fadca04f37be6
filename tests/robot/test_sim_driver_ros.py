"""The sim driver answers over DDS like a hardware driver: joint states, three synchronised
camera streams, /clock, a reset service, and it follows joint-position commands."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("lwd_sim")
pytestmark = pytest.mark.ros


@pytest.fixture
def sim_driver(ros_env):
    argv = [
        sys.executable,
        "-m",
        "lwd_fleet.drivers.sim_driver",
        "--ros-args",
        "-p",
        "task:=restocking",
        "-p",
        "seed:=3",
        "-p",
        "image_size:=64",
        "-p",
        "realtime_factor:=2.0",
    ]
    env = dict(ros_env, MUJOCO_GL=ros_env.get("MUJOCO_GL", "egl"))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _spin_until(node, predicate, timeout_s: float, proc=None) -> bool:
    import rclpy

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"sim driver exited: {proc.stdout.read()}")
    return False


def test_driver_topics_service_and_command_following(sim_driver):
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, JointState

    from lwd_msgs.msg import SimState
    from lwd_msgs.srv import ResetEpisode
    from lwd_protocol.names import RosTopics
    from lwd_protocol.robot_spec import CAMERA_NAMES, JOINT_NAMES

    rclpy.init()
    node = rclpy.create_node("sim_driver_probe")
    try:
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        joints: list[JointState] = []
        states: list[SimState] = []
        clocks: list[Clock] = []
        images: dict[str, list[Image]] = {c: [] for c in CAMERA_NAMES}
        node.create_subscription(JointState, RosTopics.JOINT_STATES, joints.append, reliable)
        node.create_subscription(SimState, RosTopics.SIM_STATE, states.append, reliable)
        node.create_subscription(Clock, "/clock", clocks.append, 10)
        for cam in CAMERA_NAMES:
            node.create_subscription(Image, RosTopics.camera_image(cam), images[cam].append, 10)

        assert _spin_until(
            node, lambda: len(joints) > 5 and all(len(v) > 2 for v in images.values()), 60, sim_driver
        ), "no joint states / images from the driver"
        assert list(joints[-1].name) == list(JOINT_NAMES)
        # the three cameras of one tick carry one stamp
        stamps = [{(m.header.stamp.sec, m.header.stamp.nanosec) for m in images[c]} for c in CAMERA_NAMES]
        assert stamps[0] & stamps[1] & stamps[2]
        frame = images["head"][-1]
        assert (frame.width, frame.height, frame.encoding) == (64, 64, "rgb8")
        pixels = np.frombuffer(bytes(frame.data), np.uint8)
        assert pixels.size == 64 * 64 * 3 and pixels.std() > 1.0
        sim_times = [c.clock.sec + c.clock.nanosec * 1e-9 for c in clocks]
        assert sim_times == sorted(sim_times) and sim_times[-1] > 0

        client = node.create_client(ResetEpisode, RosTopics.RESET_EPISODE)
        assert client.wait_for_service(timeout_sec=20)
        future = client.call_async(ResetEpisode.Request(task="gongfu_tea", seed=7))
        assert _spin_until(node, future.done, 60, sim_driver)
        reply = future.result()
        assert reply.success and reply.task == "gongfu_tea" and reply.instruction
        assert _spin_until(node, lambda: states and states[-1].task == "gongfu_tea", 30, sim_driver)

        # command the first left-arm joint 0.3 rad away and watch the arm follow it
        pub = node.create_publisher(JointState, RosTopics.JOINT_COMMAND, reliable)
        start = np.asarray(joints[-1].position)
        target = start.copy()
        target[0] += 0.3
        cmd = JointState(name=list(JOINT_NAMES), position=target.tolist())

        def moved() -> bool:
            pub.publish(cmd)
            return abs(joints[-1].position[0] - target[0]) < 0.05

        assert _spin_until(node, moved, 30, sim_driver), f"joint 0 stayed at {joints[-1].position[0]:.3f}"
        # a malformed command (wrong length) is rejected and the arm keeps its pose
        pub.publish(JointState(position=[float("nan")] * 3))
        _spin_until(node, lambda: False, 0.5)
        assert abs(joints[-1].position[0] - target[0]) < 0.05
    finally:
        node.destroy_node()
        rclpy.shutdown()
