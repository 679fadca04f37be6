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


def _start_driver(ros_env, *params: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "lwd_fleet.drivers.sim_driver", "--ros-args"]
    for param in params:
        argv += ["-p", param]
    env = dict(ros_env, MUJOCO_GL=ros_env.get("MUJOCO_GL", "egl"))
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def sim_driver(ros_env):
    proc = _start_driver(ros_env, "task:=restocking", "seed:=3", "image_size:=64", "realtime_factor:=2.0")
    try:
        yield proc
    finally:
        _stop(proc)


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


def test_virtual_teleoperator_takes_over_a_stalled_robot_and_rotates_tasks(ros_env):
    """Nobody commands the arm, so the robot stalls: the scripted expert takes the stick on
    teleop/joint_target (full joint targets inside the limits), and empty-task resets rotate."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    from lwd_msgs.srv import ResetEpisode
    from lwd_protocol.names import RosTopics
    from lwd_protocol.robot_spec import JOINT_NAMES

    proc = _start_driver(
        ros_env,
        "task:=restocking",
        "render_cameras:=false",
        "realtime_factor:=3.0",
        "virtual_teleop:=true",
        "takeover_stall_s:=0.5",
        "task_rotation:=gongfu_tea,misplaced_correction",
    )
    rclpy.init()
    node = rclpy.create_node("virtual_teleop_probe")
    try:
        targets: list[JointState] = []
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(JointState, RosTopics.TELEOP_JOINT_TARGET, targets.append, reliable)
        assert _spin_until(node, lambda: len(targets) >= 5, 60, proc), "no takeover on a stalled robot"
        msg = targets[-1]
        assert list(msg.name) == list(JOINT_NAMES) and len(msg.position) == len(JOINT_NAMES)
        assert np.all(np.isfinite(msg.position))

        client = node.create_client(ResetEpisode, RosTopics.RESET_EPISODE)
        assert client.wait_for_service(timeout_sec=20)
        tasks = []
        for _ in range(3):
            future = client.call_async(ResetEpisode.Request(task="", seed=-1))
            assert _spin_until(node, future.done, 60, proc)
            tasks.append(future.result().task)
        assert tasks == ["gongfu_tea", "misplaced_correction", "gongfu_tea"]
        # the reset hands the stick back (an empty message) before the next stall
        assert _spin_until(node, lambda: any(len(m.name) == 0 for m in targets), 10, proc)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        _stop(proc)
