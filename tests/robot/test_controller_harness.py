"""Shared pieces of the controller / teleop DDS tests (this module holds no tests itself).

* ``ControllerProcess``: the real controller node as a subprocess (``python -m
  lwd_fleet.nodes.controller_node --ros-args -p ...``) in the isolated ROS environment, output
  to a log file, stopped by PID.
* ``RobotProbe``: the test's side of the robot, one rclpy node: an ideal position-controlled arm
  (publishes ``joint_states`` = the last ``joint_command`` at 30 Hz, can be paused), recorders for
  everything the controller publishes, and publishers for estop / teleop / episode / policy status.
* ``spin_until``: spin the test's executor until a predicate holds (bounded).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lwd_protocol.robot_spec import JOINT_NAMES

A = len(JOINT_NAMES)
GRIPPERS = [i for i, n in enumerate(JOINT_NAMES) if n.endswith("gripper")]
LOWER = np.array([0.0 if i in GRIPPERS else -1.0 for i in range(A)])
UPPER = np.array([0.04 if i in GRIPPERS else 1.0 for i in range(A)])
MAX_STEP_ARM = 0.05
MAX_STEP_GRIPPER = 0.004
MAX_STEP = np.array([MAX_STEP_GRIPPER if i in GRIPPERS else MAX_STEP_ARM for i in range(A)])
START_POSE = np.where(np.isin(np.arange(A), GRIPPERS), 0.02, 0.1)


def controller_params(**overrides: object) -> dict[str, object]:
    params: dict[str, object] = {
        "robot_id": "robot_01",
        "joint_limits_lower": LOWER.tolist(),
        "joint_limits_upper": UPPER.tolist(),
        "max_step_arm": MAX_STEP_ARM,
        "max_step_gripper": MAX_STEP_GRIPPER,
        "backend": "onnxruntime-cpu",
        "inference_threads": 1,
        "warmup_iterations": 1,
        "noise_seed": 0,
        # generous watchdog limits: 2 shared cores, several test suites at once
        "joint_state_max_age_s": 0.5,
        "status_period_s": 0.5,
    }
    params.update(overrides)
    return params


def _ros_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_ros_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, str):
        return value if value else "''"
    return str(value)


class ControllerProcess:
    """The controller node in its own process; ``stop()`` ends it by PID."""

    def __init__(self, env: dict[str, str], params: dict[str, object], log_path: Path) -> None:
        argv = [sys.executable, "-m", "lwd_fleet.nodes.controller_node", "--ros-args"]
        for key, value in params.items():
            argv += ["-p", f"{key}:={_ros_value(value)}"]
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@contextmanager
def running_controller(env: dict[str, str], params: dict[str, object], tmp: Path) -> Iterator[ControllerProcess]:
    proc = ControllerProcess(env, params, tmp / f"controller-{os.getpid()}-{time.monotonic_ns()}.log")
    try:
        yield proc
    finally:
        proc.stop()


@dataclass
class Sample:
    wall: float
    value: object


class RobotProbe:
    """Test-side rclpy node (see module docstring). Create after rclpy.init()."""

    def __init__(self, name: str = "robot_probe", start_pose: np.ndarray = START_POSE) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool

        from lwd_fleet.control.topics import TELEOP_JOINT_TARGET
        from lwd_msgs.msg import ActionChunk, ControlMode, EpisodeEvent, ExecutedAction, PolicyStatus
        from lwd_protocol.names import RosTopics

        self.node = rclpy.create_node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.position = np.asarray(start_pose, np.float64).copy()
        self.publish_states = True
        self.commands: list[Sample] = []
        self.executed: list[Sample] = []
        self.modes: list[Sample] = []
        self.statuses: list[Sample] = []
        self.chunks: list[Sample] = []
        self.events: list[Sample] = []

        def rec(store: list[Sample]) -> Callable[[object], None]:
            return lambda msg: store.append(Sample(time.monotonic(), msg))

        def on_command(msg: JointState) -> None:
            pos = np.asarray(msg.position, np.float64)
            self.commands.append(Sample(time.monotonic(), pos))
            self.position = pos

        n = self.node
        n.create_subscription(JointState, RosTopics.JOINT_COMMAND, on_command, reliable)
        n.create_subscription(ExecutedAction, RosTopics.EXECUTED_ACTION, rec(self.executed), reliable)
        n.create_subscription(ControlMode, RosTopics.CONTROL_MODE, rec(self.modes), latched)
        n.create_subscription(PolicyStatus, RosTopics.ACTIVE_POLICY, rec(self.statuses), latched)
        n.create_subscription(ActionChunk, RosTopics.ACTION_CHUNK, rec(self.chunks), reliable)
        n.create_subscription(EpisodeEvent, RosTopics.EPISODE_EVENT, rec(self.events), reliable)
        self.state_pub = n.create_publisher(JointState, RosTopics.JOINT_STATES, 10)
        self.estop_pub = n.create_publisher(Bool, RosTopics.ESTOP, reliable)
        self.human_pub = n.create_publisher(JointState, TELEOP_JOINT_TARGET, reliable)
        self.event_pub = n.create_publisher(EpisodeEvent, RosTopics.EPISODE_EVENT, reliable)
        self.policy_pub = n.create_publisher(PolicyStatus, RosTopics.POLICY_STATUS, reliable)
        self._JointState = JointState
        # optional streams, published with the joint state when set
        self.sim_state: np.ndarray | None = None
        self.images: dict[str, np.ndarray] = {}
        self._sim_pub = None
        self._image_pubs: dict[str, object] = {}
        self.timer = n.create_timer(1.0 / 30.0, self._publish_state)

    def _publish_state(self) -> None:
        if not self.publish_states:
            return
        stamp = self.node.get_clock().now().to_msg()
        msg = self._JointState(name=list(JOINT_NAMES), position=self.position.tolist())
        msg.header.stamp = stamp
        self.state_pub.publish(msg)
        if self.sim_state is not None:
            from lwd_msgs.msg import SimState
            from lwd_protocol.names import RosTopics

            if self._sim_pub is None:
                self._sim_pub = self.node.create_publisher(SimState, RosTopics.SIM_STATE, 10)
            sim = SimState(state=self.sim_state.astype(np.float32).tolist())
            sim.header.stamp = stamp
            self._sim_pub.publish(sim)
        for camera, pixels in list(self.images.items()):
            from sensor_msgs.msg import Image

            from lwd_fleet.imaging import numpy_to_image_fields
            from lwd_protocol.names import RosTopics

            if camera not in self._image_pubs:
                self._image_pubs[camera] = self.node.create_publisher(Image, RosTopics.camera_image(camera), 5)
            img = Image(**numpy_to_image_fields(pixels, "rgb8"))
            img.header.stamp, img.header.frame_id = stamp, camera
            self._image_pubs[camera].publish(img)

    # ------------------------------------------------------------------ helpers
    def spin_until(
        self, predicate: Callable[[], bool], timeout_s: float, proc: ControllerProcess | None = None, what: str = ""
    ) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.01)
            if predicate():
                return True
            if proc is not None and not proc.alive():
                raise RuntimeError(f"controller exited while waiting for {what}:\n{proc.log()}")
        return False

    def connect_before_first_state(self, proc: ControllerProcess, timeout_s: float = 30.0) -> bool:
        """Withhold joint states until DDS has matched the controller's command publisher and its
        joint_states subscription, so the probe sees the very first command (under load discovery can
        lag the controller's first ticks). Call before the probe has published any state."""
        from lwd_protocol.names import RosTopics

        self.publish_states = False
        n = self.node
        connected = self.spin_until(
            lambda: n.count_publishers(RosTopics.JOINT_COMMAND) > 0 and n.count_subscribers(RosTopics.JOINT_STATES) > 0,
            timeout_s,
            proc,
            "the controller's joint_command publisher and joint_states subscription",
        )
        self.publish_states = True
        return connected

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def last_command_near(self, want: np.ndarray, atol: float) -> bool:
        """Whether a command has arrived and the latest is within `atol` of `want` (False before the first)."""
        return bool(self.commands) and np.allclose(self.commands[-1].value, want, rtol=0, atol=atol)

    def last_mode(self):
        return self.modes[-1].value if self.modes else None

    def last_status(self):
        return self.statuses[-1].value if self.statuses else None

    def send_event(self, event: int, outcome: int = 0, task: str = "", episode_id: str = "ep") -> None:
        from lwd_msgs.msg import EpisodeEvent

        msg = EpisodeEvent(event=event, outcome=outcome, task=task, episode_id=episode_id, robot_id="robot_01")
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.event_pub.publish(msg)

    def send_policy_ready(self, version: int) -> None:
        from lwd_msgs.msg import PolicyStatus

        msg = PolicyStatus(robot_id="robot_01", pending_version=version, state="ready")
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.policy_pub.publish(msg)

    def command_array(self, since: float = -np.inf) -> np.ndarray:
        rows = [s.value for s in self.commands if s.wall >= since]
        return np.asarray(rows).reshape(-1, A)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def assert_safe(commands: np.ndarray, max_step: np.ndarray = MAX_STEP) -> None:
    """Every command inside the limits, every consecutive change within the per-tick step."""
    assert commands.ndim == 2 and commands.shape[1] == A
    assert np.all(np.isfinite(commands))
    assert np.all(commands >= LOWER - 1e-12) and np.all(commands <= UPPER + 1e-12)
    if len(commands) > 1:
        steps = np.abs(np.diff(commands, axis=0))
        worst = np.max(steps - max_step[None])
        assert worst <= 1e-9, f"a joint moved {worst:.3g} more than its per-tick step"
