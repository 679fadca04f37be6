"""ROS 2 driver for the simulated robot: the same topics and services a hardware driver offers.

Publishes `joint_states` (sensor_msgs/JointState), the three cameras on
`cameras/<name>/image_raw` (sensor_msgs/Image, one shared stamp per tick), `sim/state`
(lwd_msgs/SimState, sim only) and `/clock`; takes joint-position targets on `joint_command`
and serves `episode/reset`. Everything above this node sees a robot, not a simulator: only the
parameters differ. It steps the MuJoCo sim at 30 Hz times `realtime_factor` of wall time and
stamps everything with simulated time, so a fleet of sims can run faster than real time with
`use_sim_time` — give each simulated robot its own ROS_DOMAIN_ID, as real robots would have
their own machines, so their /clock topics never meet.

Two sim-only helpers stand in for people at the robot:
- `task_rotation` (comma-separated task names): an `episode/reset` request with an empty task
  gets the next task of the rotation, as a site operator would set up the next job.
- `virtual_teleop`: the task's scripted expert plays the teleoperator. When the takeover rule
  (lwd_fleet.drivers.virtual_teleop) says a watching human would grab the stick, the driver
  publishes the expert's joint targets on `teleop/joint_target` every tick -- the same topic
  and message a joystick teleop node uses -- and an empty message to hand control back. The
  controller cannot tell it from a person, and the recorder labels those steps HUMAN.
"""

from __future__ import annotations

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import Image, JointState

from lwd_fleet.drivers.virtual_teleop import TakeoverDecider, TakeoverRule
from lwd_msgs.msg import SimState
from lwd_msgs.srv import ResetEpisode
from lwd_protocol.names import RosTopics
from lwd_protocol.robot_spec import CAMERA_NAMES, CONTROL_RATE_HZ, JOINT_NAMES
from lwd_protocol.tasks import TASK_NAMES


def _time_msg(t_ns: int) -> Time:
    return Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)


class SimDriverNode(Node):
    """Steps one simulated robot and exposes it over ROS 2."""

    def __init__(self) -> None:
        super().__init__("sim_driver")
        self.declare_parameter("task", "restocking", descriptor=_desc("task from lwd_protocol.tasks"))
        self.declare_parameter("seed", 0, descriptor=_desc("scene seed for the first episode"))
        self.declare_parameter("render_cameras", True, descriptor=_desc("render and publish the 3 cameras"))
        self.declare_parameter("image_size", 128, descriptor=_desc("square camera resolution in pixels"))
        self.declare_parameter("camera_every_n", 1, descriptor=_desc("publish images every n control ticks"))
        self.declare_parameter("realtime_factor", 1.0, descriptor=_desc("sim seconds per wall second"))
        self.declare_parameter("publish_clock", True, descriptor=_desc("publish /clock with simulated time"))
        self.declare_parameter("task_rotation", "", descriptor=_desc("comma-separated tasks for empty-task resets"))
        self.declare_parameter("virtual_teleop", False, descriptor=_desc("scripted expert acts as the teleoperator"))
        self.declare_parameter("takeover_stall_s", 6.0, descriptor=_desc("no subtask progress this long -> takeover"))
        self.declare_parameter("takeover_release_subtasks", 1, descriptor=_desc("subtasks done before hand-back"))
        self.declare_parameter("takeover_max_hold_s", 25.0, descriptor=_desc("longest takeover"))
        self.declare_parameter("takeover_watch_probability", 1.0, descriptor=_desc("chance a stall is noticed"))
        p = self.get_parameter
        self.task = str(p("task").value)
        if self.task not in TASK_NAMES:
            raise ValueError(f"parameter task={self.task!r} is not one of {TASK_NAMES}")
        self.rotation = [t.strip() for t in str(p("task_rotation").value).split(",") if t.strip()]
        unknown = [t for t in self.rotation if t not in TASK_NAMES]
        if unknown:
            raise ValueError(f"parameter task_rotation names unknown tasks {unknown}; known: {TASK_NAMES}")
        self.rotation_index = 0
        self.render = bool(p("render_cameras").value)
        self.image_size = int(p("image_size").value)
        self.camera_every_n = max(1, int(p("camera_every_n").value))
        self.publish_clock = bool(p("publish_clock").value)
        factor = float(p("realtime_factor").value)
        if not factor > 0:
            raise ValueError(f"realtime_factor must be > 0, got {factor}")

        self.env = self._make_env(self.task, int(p("seed").value))
        self.sim_time_ns = 0
        self.tick = 0
        self.command = self.env.joint_position()
        self.rejected_commands = 0

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.joint_pub = self.create_publisher(JointState, RosTopics.JOINT_STATES, reliable)
        self.state_pub = self.create_publisher(SimState, RosTopics.SIM_STATE, reliable)
        self.image_pubs = {c: self.create_publisher(Image, RosTopics.camera_image(c), 5) for c in CAMERA_NAMES}
        self.clock_pub = self.create_publisher(ClockMsg, "/clock", 10) if self.publish_clock else None
        self.create_subscription(JointState, RosTopics.JOINT_COMMAND, self._on_command, reliable)
        self.create_service(ResetEpisode, RosTopics.RESET_EPISODE, self._on_reset)
        self.teleop = None
        if bool(p("virtual_teleop").value):
            rule = TakeoverRule(
                stall_s=float(p("takeover_stall_s").value),
                release_after_subtasks=int(p("takeover_release_subtasks").value),
                max_hold_s=float(p("takeover_max_hold_s").value),
                watch_probability=float(p("takeover_watch_probability").value),
            )
            self.teleop = TakeoverDecider(rule, seed=int(p("seed").value))
            self.teleop_pub = self.create_publisher(JointState, RosTopics.TELEOP_JOINT_TARGET, reliable)
            self.expert = self._make_expert()
            self.human_active = False
        wall = Clock(clock_type=ClockType.STEADY_TIME)
        self.timer = self.create_timer(1.0 / (CONTROL_RATE_HZ * factor), self._on_tick, clock=wall)
        self.get_logger().info(
            f"sim driver: task={self.task} cameras={'on' if self.render else 'off'} {self.image_size}px "
            f"realtime_factor={factor} clock={'on' if self.publish_clock else 'off'}"
        )

    def _make_env(self, task: str, seed: int):
        from lwd_sim.env import make_env  # the sim is only imported by the sim driver

        return make_env(task, seed=seed, render=False, image_size=self.image_size)

    def _make_expert(self):
        from lwd_sim.experts import ScriptedExpert

        return ScriptedExpert(self.env)

    # --- inputs ----------------------------------------------------------------------------------
    def _on_command(self, msg: JointState) -> None:
        """Accept a full 16-D position target (by name when names are given); reject anything else."""
        position = np.asarray(msg.position, np.float64)
        if msg.name:
            index = {n: i for i, n in enumerate(msg.name)}
            if any(n not in index for n in JOINT_NAMES) or len(msg.name) != len(position):
                self._reject(f"joint names {list(msg.name)} do not cover the robot's joints")
                return
            position = position[[index[n] for n in JOINT_NAMES]]
        if position.shape != (len(JOINT_NAMES),) or not np.all(np.isfinite(position)):
            self._reject(f"command of shape {position.shape} with non-finite or missing values")
            return
        self.command = position

    def _reject(self, why: str) -> None:
        self.rejected_commands += 1
        self.get_logger().warning(f"rejected joint command: {why}", throttle_duration_sec=1.0)

    def _on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response) -> ResetEpisode.Response:
        task = request.task or self._next_task()
        if task not in TASK_NAMES:
            response.success, response.message = False, f"unknown task {task!r}"
            return response
        seed = int(request.seed) if request.seed >= 0 else int(np.random.default_rng().integers(1 << 31))
        if task != self.task:
            self.env.close()
            self.env, self.task = self._make_env(task, seed), task
        else:
            self.env.reset(seed)
        self.command = self.env.joint_position()
        if self.teleop is not None:
            self.expert = self._make_expert()
            self.teleop.reset(self.sim_time_ns / 1e9)
            self._release_human()
        response.success, response.task, response.instruction = True, task, self.env.instruction
        response.message = f"reset {task} seed={seed}"
        return response

    def _next_task(self) -> str:
        if not self.rotation:
            return self.task
        task = self.rotation[self.rotation_index % len(self.rotation)]
        self.rotation_index += 1
        return task

    # --- the simulated teleoperator --------------------------------------------------------------
    def _drive_teleop(self, info: dict) -> None:
        over = bool(info["success"]) or bool(info["failed"])
        human = not over and self.teleop.update(self.sim_time_ns / 1e9, int(info["subtask_index"]))
        if human:
            target = JointState(name=list(JOINT_NAMES), position=np.asarray(self.expert.act(), float).tolist())
            target.header.stamp = self._stamp()
            self.teleop_pub.publish(target)
            if not self.human_active:
                self.get_logger().info(f"virtual teleoperator takes over at subtask {info['subtask_index']}")
            self.human_active = True
        else:
            self._release_human()

    def _release_human(self) -> None:
        if self.human_active:
            self.teleop_pub.publish(JointState())  # empty = hand control back
            self.get_logger().info("virtual teleoperator releases")
        self.human_active = False

    def _stamp(self) -> Time:
        return _time_msg(self.sim_time_ns) if self.publish_clock else self.get_clock().now().to_msg()

    # --- the 30 Hz loop --------------------------------------------------------------------------
    def _on_tick(self) -> None:
        self.env.step(self.command)
        self.tick += 1
        self.sim_time_ns = round(self.tick * 1e9 / CONTROL_RATE_HZ)
        stamp = self._stamp()
        if self.clock_pub is not None:
            self.clock_pub.publish(ClockMsg(clock=stamp))
        joint = JointState(
            name=list(JOINT_NAMES),
            position=self.env.joint_position().tolist(),
            velocity=self.env.joint_velocity().tolist(),
        )
        joint.header.stamp = stamp
        self.joint_pub.publish(joint)
        info = self.env.info()
        state = SimState(
            step=self.env.steps,
            task=self.task,
            state=self.env.sim_state().tolist(),
            subtask_index=int(info["subtask_index"]),
            num_subtasks=int(info["num_subtasks"]),
            success=bool(info["success"]),
            failed=bool(info["failed"]),
        )
        state.header.stamp = stamp
        self.state_pub.publish(state)
        if self.teleop is not None:
            self._drive_teleop(info)
        if self.render and self.tick % self.camera_every_n == 0:
            for camera, pixels in self.env.render(self.image_size).items():
                self.image_pubs[camera].publish(_image_msg(pixels, stamp, camera))


def _image_msg(pixels: np.ndarray, stamp: Time, frame_id: str) -> Image:
    h, w, _ = pixels.shape
    msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = np.ascontiguousarray(pixels, np.uint8).tobytes()
    return msg


def _desc(text: str):
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(description=text)


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = SimDriverNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.env.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
